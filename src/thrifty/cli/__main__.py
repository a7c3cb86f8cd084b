"""`python -m thrifty.cli`: the same command line as the `thrifty` script."""

from thrifty.cli import app

app()
