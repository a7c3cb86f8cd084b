"""Where `thrifty.cli_cluster` still finds the shared output helpers; they live in cli/output.py."""

from thrifty.cli.output import EXIT_BAD_INPUT, fail, results_console

__all__ = ["EXIT_BAD_INPUT", "fail", "results_console"]
