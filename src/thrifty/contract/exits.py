"""Exit statuses with a meaning beyond success and failure, shared by jobs and executors."""

EXIT_RESIZE = 75
"""A job that checkpointed on request and wants a restart, possibly elsewhere (EX_TEMPFAIL)."""

EXIT_LOST = -1000
"""Recorded for a replica whose node or process vanished without an exit status: resume it."""
