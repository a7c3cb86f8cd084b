"""Starting a thrifty job inside Ray Train's TorchTrainer, elastic worker counts included.

Ray Train runs the training function in one actor per worker, after it has set RANK, WORLD_SIZE,
LOCAL_RANK and LOCAL_WORLD_SIZE and created the torch process group, so `thrifty.train.init`
works there as under torchrun (and leaves the group to Ray, which destroys it). What Ray does not
provide is a checkpoint folder that thrifty can use: after a worker failure or an elastic resize
Ray starts a new worker group, maybe of another size and on other nodes, and calls the training
function again from its first line, so the job must find its own latest checkpoint in a folder
that every worker reaches. `init` picks the run's folder in Ray's storage
(`RunConfig(storage_path=...)`, which Ray has already checked every worker can reach) unless a
folder is given.

Ray is imported only when `init` runs, so thrifty.train works where Ray is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from thrifty.contract import Env
from thrifty.errors import ThriftyError
from thrifty.train.bootstrap import init as init_job
from thrifty.train.env import TrainEnv
from thrifty.train.job import Job

CHECKPOINT_FOLDER = "thrifty-checkpoints"
"""Name of the checkpoint folder inside the Ray run's folder."""


def _context() -> Any:
    """Ray Train's context for this worker, or a ThriftyError saying why there is none."""
    try:
        import ray.train
    except ImportError:
        raise ThriftyError(
            "thrifty.train.ray_train needs Ray Train: install it with pip install "
            "'ray[train]' (or 'thrifty[ray]'), or call thrifty.train.init outside Ray"
        ) from None
    try:
        return ray.train.get_context()
    except RuntimeError:
        raise ThriftyError(
            "thrifty.train.ray_train.init runs only inside a Ray Train training function "
            "(the function given to TorchTrainer); elsewhere call thrifty.train.init"
        ) from None


def run_folder(context: Any) -> Path | None:
    """The Ray run's folder when Ray's storage is a local or mounted file system, else None.

    Ray checks that every worker sees its storage folder, so a folder inside it survives moving
    workers to other nodes. Cloud storage (s3://, gs://) is not a file system thrifty can write
    its checkpoints to.
    """
    try:
        storage = context.get_storage()
    except NotImplementedError:  # Ray Train's local mode (num_workers=0) has no storage yet
        return None
    if storage.storage_filesystem.type_name != "local":
        return None
    return Path(storage.experiment_fs_path)


def init(
    checkpoint_dir: str | os.PathLike[str] | None = None,
    report_to: str | None = None,
    **kwargs: Any,
) -> Job:
    """`thrifty.train.init` for a Ray Train worker; call it first in the training function.

    Without `checkpoint_dir` (nor the executor's, `Env.CHECKPOINT_DIR`), checkpoints go to
    `<storage_path>/<run name>/thrifty-checkpoints`, so that a restarted or resized worker group
    resumes where the last one checkpointed. The job is named after the Ray run unless the
    executor named it (`Env.JOB_ID`). Other keyword arguments go to `thrifty.train.init`.
    """
    context = _context()
    # Ray Train sets these before calling the training function; its context is the authority,
    # and setting them from it also covers launch paths that do not (local mode).
    os.environ["RANK"] = str(context.get_world_rank())
    os.environ["WORLD_SIZE"] = str(context.get_world_size())
    os.environ["LOCAL_RANK"] = str(context.get_local_rank())
    os.environ["LOCAL_WORLD_SIZE"] = str(context.get_local_world_size())
    os.environ.setdefault(Env.JOB_ID, context.get_experiment_name())
    if checkpoint_dir is None and TrainEnv.from_environ().checkpoint_dir is None:
        folder = run_folder(context)
        if folder is None:
            raise ThriftyError(
                "Ray's storage is not a file system every worker can write to (or Ray runs in "
                "local mode): pass checkpoint_dir (for example through train_loop_config) naming "
                "a folder every worker shares, or set RunConfig(storage_path=...) to one"
            )
        checkpoint_dir = folder / CHECKPOINT_FOLDER
    return init_job(checkpoint_dir, report_to, **kwargs)
