"""The one contract: the typed values that flow from a training job through the scheduler and back.

Every layer may import this package, and it imports nothing but `goodput` and `errors` (no torch,
no web framework, no database), so the control plane, the simulator and a training process agree
on these values by construction rather than by convention.

- `GoodputModel`: what a job knows about itself (from `thrifty.goodput`).
- `JobReport`: what a running job sends (its model, progress, batch, start-up, energy, metrics).
- `Allocation`: what the scheduler grants (GPUs per node, one kind); it reaches a job as one value.
- the exit codes a job and an executor speak, and the names of every `THRIFTY_*` variable.
"""

from thrifty.contract.allocation import Allocation
from thrifty.contract.environment import Env
from thrifty.contract.exits import EXIT_LOST, EXIT_RESIZE
from thrifty.contract.report import JobReport
from thrifty.goodput import GoodputModel

__all__ = ["EXIT_LOST", "EXIT_RESIZE", "Allocation", "Env", "GoodputModel", "JobReport"]
