"""One error type for everything a user can get wrong, so the CLI can report it in one line."""

from __future__ import annotations


class ThriftyError(Exception):
    """A problem the user can fix: the message names the field or file at fault and the fix."""


class InputError(ThriftyError):
    """Bad input read from a file: names the file, the line (when known) and the field."""

    def __init__(self, path: str, message: str, line: int | None = None, field: str | None = None):
        self.path = path
        self.line = line
        self.field = field
        where = path if line is None else f"{path}:{line}"
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}: {what}{message}")
