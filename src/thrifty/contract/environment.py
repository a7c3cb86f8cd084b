"""The names of the environment variables thrifty reads and writes, in one place.

Server-side variables configure `thrifty.settings.Settings`; job-side ones are set by an executor
for every replica it starts and read by `thrifty.train`. No module spells a `THRIFTY_*` name itself.
"""

from __future__ import annotations


class Env:
    """`THRIFTY_*` variable names (plain strings, so `os.environ[Env.HOME]` reads naturally)."""

    # Read by the server, the CLI and the simulator (see `thrifty.settings.Settings`).
    HOME = "THRIFTY_HOME"  # the server's state: database, token, logs, checkpoints
    CONFIG = "THRIFTY_CONFIG"  # a TOML settings file (default: $THRIFTY_HOME/config.toml)
    DB_URL = "THRIFTY_DB_URL"  # SQLAlchemy URL of the job store
    SERVER = "THRIFTY_SERVER"  # the API's URL, for the CLI
    TOKEN = "THRIFTY_TOKEN"  # the CLI's API token
    DATA = "THRIFTY_DATA"  # the measured-data folder (pollux/, sia/, ...)
    GPU_KIND = "THRIFTY_GPU_KIND"  # the GPU kind the local executor offers

    # Set by an executor for every replica of an attempt, read by `thrifty.train`.
    JOB_ID = "THRIFTY_JOB_ID"
    CHECKPOINT_DIR = "THRIFTY_CHECKPOINT_DIR"
    REPORT = "THRIFTY_REPORT"  # where the job sends its `JobReport`: an http(s) URL or a file
    ALLOCATION = "THRIFTY_ALLOCATION"  # the attempt's `Allocation`, as JSON

    @classmethod
    def reserved(cls, name: str) -> bool:
        """True for a name a job spec may not set: thrifty owns the whole `THRIFTY_` prefix."""
        return name.startswith("THRIFTY_")
