"""thrifty: goodput-optimised training, scheduling, simulation and accounting for deep learning."""

from thrifty.errors import ThriftyError

__all__ = ["ThriftyError"]
__version__ = "0.1.0"
