"""The control plane: job specs, the durable store, the scheduling loop, executors and the API.

Kept free of imports here: `python -m thrifty.cluster.replica` starts every local replica and
must not pay for the whole control plane.
"""
