"""Reading a replica's log file: its tail, or on from a byte offset, within a byte cap."""

from __future__ import annotations

from pathlib import Path

MAX_LOG_BYTES = 1 << 20  # per rank and response: a client pages on with `offset`


def read_tail(path: Path, lines: int, cap: int = MAX_LOG_BYTES) -> tuple[str, int, int, bool]:
    """The last `lines` lines of a file, read backwards in blocks (a log may be gigabytes), at
    most `cap` bytes. Returns (text, its start and end byte offsets, clipped by `cap`)."""
    with path.open("rb") as f:
        end = f.seek(0, 2)
        start, chunk = end, b""
        while start > 0 and chunk.count(b"\n") <= lines and end - start < cap:
            step = min(64 << 10, start)
            start -= step
            f.seek(start)
            chunk = f.read(step) + chunk
    parts = chunk.splitlines(keepends=True)
    if start > 0 and parts:
        parts = parts[1:]  # most likely the end of a line that began before the block
    keep = parts[-lines:] if lines else []
    clipped = start > 0 and len(keep) < lines
    data = b"".join(keep)
    if len(data) > cap:
        data, clipped = data[-cap:], True
    return data.decode("utf-8", errors="replace"), end - len(data), end, clipped


def read_from(path: Path, offset: int, cap: int = MAX_LOG_BYTES) -> tuple[str, int, int, bool]:
    """A file from byte `offset` on, at most `cap` bytes, ending at a line end when it can.
    Returns (text, its start and end byte offsets, more bytes left after it)."""
    with path.open("rb") as f:
        size = f.seek(0, 2)
        offset = min(offset, size)
        f.seek(offset)
        data = f.read(cap)
    more = offset + len(data) < size
    if more and b"\n" in data:  # leave a split line (and a split UTF-8 character) for next time
        data = data[: data.rindex(b"\n") + 1]
    return data.decode("utf-8", errors="replace"), offset, offset + len(data), more


def rank_logs(folder: Path, attempt: int) -> dict[int, Path]:
    """The log file of every rank of one attempt, by rank."""
    files = {}
    for path in folder.glob(f"attempt-{attempt}-rank-*.log"):
        rank = path.stem.rsplit("-", 1)[1]
        if rank.isdigit():
            files[int(rank)] = path
    return files
