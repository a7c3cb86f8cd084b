from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from thrifty.errors import ThriftyError
from thrifty.train import CheckpointStore
from thrifty.train.checkpoint import check_writable


def test_keeps_the_newest_two_and_round_trips(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    for step in range(4):
        store.save({"step": step, "weights": torch.full((3,), float(step))})
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["ckpt-000000002.pt", "ckpt-000000003.pt"]
    latest = store.latest()
    assert latest is not None
    assert latest[1]["step"] == 3
    assert torch.equal(latest[1]["weights"], torch.full((3,), 3.0))


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_damaged_newest_falls_back_to_the_previous_with_a_warning(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"step": 1})
    newest = store.save({"step": 2, "pad": torch.zeros(100)})
    data = bytearray(newest.read_bytes())
    if damage == "flip":
        data[-10] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray()
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        latest = store.latest()
    assert latest is not None and latest[1]["step"] == 1
    assert "skipping checkpoint" in caplog.text and newest.name in caplog.text
    with pytest.raises(ThriftyError):
        CheckpointStore.read(newest)


def test_no_temporary_files_are_left_behind(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"x": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000000.pt"]
    assert CheckpointStore(tmp_path / "missing").latest() is None


def test_unwritable_folder_is_reported_with_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ThriftyError, match=r"checkpoint folder .* THRIFTY_CHECKPOINT_DIR"):
        check_writable(blocker / "ckpt")
    with pytest.raises(ThriftyError, match="keep"):
        CheckpointStore(tmp_path, keep=1)
