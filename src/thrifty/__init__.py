"""thrifty: goodput-optimised training, scheduling, simulation and accounting for deep learning."""

import os

# One BLAS thread per process, set before numpy loads. The simulator and the goodput fits solve
# thousands of tiny problems (a 7-parameter fit, one interpolated point) where a multi-threaded
# OpenBLAS spends far longer handing work to its threads than computing: on 2 cores a 40-job
# simulation took 5x the CPU time with the default threads. An explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from thrifty.errors import ThriftyError

__all__ = ["ThriftyError"]
__version__ = "0.1.0"
