"""A job's states, in a module of their own: the CLI needs them without the store's imports."""

QUEUED, RUNNING, RESTARTING = "queued", "running", "restarting"
SUCCEEDED, FAILED, CANCELLED = "succeeded", "failed", "cancelled"
ACTIVE_STATES = (QUEUED, RUNNING, RESTARTING)
TERMINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)

STATE_COLOURS = {RUNNING: "green", QUEUED: "yellow", RESTARTING: "cyan",
                 SUCCEEDED: "bold green", FAILED: "red", CANCELLED: "dim"}
"""Rich styles of each state in the CLI's and the demo's tables."""
