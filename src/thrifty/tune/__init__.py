"""Hyperparameter sweeps whose trials are adaptive jobs, stopped early when hopeless."""
