"""Many resizes over one long run: training goes on as if never stopped, within bounds, and
every replica leaves cleanly each time."""

from __future__ import annotations

from pathlib import Path

from launching import launch

from thrifty.train import EXIT_RESIZE, CheckpointStore

WORKER = Path(__file__).with_name("resize_worker.py")
EPOCHS = 20
WORLDS = (1, 2, 1, 2, 1)  # one segment each; all but the last are stopped by SIGTERM
STOPS = (4, 8, 12, 16)  # the epoch each stopped segment is signalled in


def check_clean(codes: list[int], expected: int, err: str) -> None:
    assert codes == [expected] * len(codes), err
    assert "terminate called" not in err, err
    assert "Traceback" not in err, err


def check_bounds(results: list[dict | None]) -> None:
    for result in results:
        assert result is not None
        assert result["checked"] > 0
        assert result["violations"] == [], result["violations"]
        assert result["top_factor"] <= 128 / 32 + 1e-9  # never beyond linear scaling


def test_resized_run_matches_an_unresized_one_and_every_replica_exits_cleanly(
    tmp_path: Path,
) -> None:
    codes, plain, err = launch(1, tmp_path / "plain", "--epochs", str(EPOCHS), "--ckpt",
                               str(tmp_path / "plain-ckpt"), worker=WORKER)
    check_clean(codes, 0, err)
    check_bounds(plain)
    assert plain[0]["accuracy"] > 0.9  # chance is 0.1

    ckpt = tmp_path / "ckpt"
    for segment, world in enumerate(WORLDS):
        args = ["--epochs", str(EPOCHS), "--ckpt", str(ckpt)]
        last = segment == len(WORLDS) - 1
        if not last:
            args += ["--stop-epoch", str(STOPS[segment]), "--stop-rank", str(world - 1)]
        codes, results, err = launch(world, tmp_path / f"seg{segment}", *args, worker=WORKER)
        check_clean(codes, 0 if last else EXIT_RESIZE, err)
        check_bounds(results)
        assert all(r["batch_size"] == 128 for r in results if r)  # held through restarts
        if not last:
            latest = CheckpointStore(ckpt).latest()
            assert latest is not None
            assert latest[1]["world_size"] == world and latest[1]["epoch"] == STOPS[segment]
    final = results[0]
    assert final is not None and final["epoch"] == EPOCHS
    assert final["step"] == plain[0]["step"]  # the same samples, in the same steps
    assert abs(final["accuracy"] - plain[0]["accuracy"]) <= 0.03, (final, plain[0])
