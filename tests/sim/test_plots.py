"""The comparison figure: the panels, lines and file it promises, and `simulate --plot`."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from thrifty.cli import app
from thrifty.errors import ThriftyError
from thrifty.sim.plots import PlotRun, check_plot_path, comparison_figure, save_comparison

POLICIES = ("fifo", "tiresias")


def runs(workloads: int) -> list[PlotRun]:
    rng = np.random.default_rng(0)
    return [
        PlotRun(policy, f"w{w}", list(rng.lognormal(8, 1, 50 + w)),
                [(60.0 * t, int(rng.integers(0, 64))) for t in range(1, 120)])
        for w in range(workloads)
        for policy in POLICIES
    ]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG header (IHDR), without an image library."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_each_workload_gets_a_cdf_and_a_gpus_panel_with_one_line_per_policy() -> None:
    data = runs(3)
    fig = comparison_figure(data, capacity=64)
    axes = fig.get_axes()
    assert len(axes) == 6
    titled = [ax for ax in axes if ax.get_title()]
    assert [ax.get_title() for ax in titled] == ["w0", "w1", "w2"]
    for ax in titled:  # CDFs: one step line per policy, monotone from above 0 up to 1
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == list(POLICIES)
        for line in lines:
            y = np.asarray(line.get_ydata())
            assert np.all(np.diff(y) >= 0) and y[-1] == 1.0 and y[0] > 0
        assert ax.get_xscale() == "log"
    source = {(r.workload, r.policy): r for r in data}
    first = titled[0].get_lines()[0]
    expected = np.sort(np.asarray(source[("w0", "fifo")].jcts_s)) / 3600
    assert np.allclose(first.get_xdata(), expected)
    busy = [ax for ax in axes if ax.get_ylabel() == "GPUs in use"]
    assert len(busy) == 3
    for ax in busy:
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels == [*POLICIES, "capacity"]
        assert ax.get_ylim()[1] >= 64
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()][:2] == list(POLICIES)


def test_many_workloads_wrap_into_more_rows() -> None:
    fig = comparison_figure(runs(6))
    assert len(fig.get_axes()) == 12
    width, height = fig.get_size_inches()
    assert height > width / 2  # two blocks of rows, not one strip twelve panels wide


def test_saved_png_has_the_figure_size(tmp_path: Path) -> None:
    path = tmp_path / "cmp.png"
    fig = save_comparison(runs(2), path, capacity=64, title="t")
    width, height = png_size(path)
    inches = fig.get_size_inches()
    assert (width, height) == (round(inches[0] * 120), round(inches[1] * 120))
    assert path.stat().st_size > 20_000  # drawn content, not a blank canvas


def test_bad_plot_paths(tmp_path: Path) -> None:
    with pytest.raises(ThriftyError, match=r"format 'xyz' is not supported"):
        check_plot_path(tmp_path / "a.xyz")
    with pytest.raises(ThriftyError, match="does not exist"):
        check_plot_path(tmp_path / "nope" / "a.png")
    with pytest.raises(ThriftyError, match="nothing to plot"):
        comparison_figure([])


HEADER = "name,time,application,num_replicas,batch_size\n"
SIX_JOBS = HEADER + "".join(
    f"job-{i},{i * 300},{app},{replicas},{batch}\n"
    for i, (app, replicas, batch) in enumerate(
        [("ncf", 1, 32768), ("cifar10", 2, 256), ("ncf", 2, 32768), ("cifar10", 4, 512),
         ("ncf", 1, 32768), ("ncf", 4, 65536)]
    )
)


def test_simulate_plot_writes_the_figure(tmp_path: Path, data_root: Path) -> None:
    workload = tmp_path / "six.csv"
    workload.write_text(SIX_JOBS)
    plot = tmp_path / "out.png"
    result = CliRunner().invoke(app, [
        "simulate", str(workload), "-c", "pollux64", "-p", "fifo", "--workers", "1",
        "--data", str(data_root), "--plot", str(plot),
    ])
    assert result.exit_code == 0, result.stderr
    width, height = png_size(plot)
    assert width > 300 and height > 300


def test_simulate_bad_plot_suffix_fails_before_running(tmp_path: Path, data_root: Path) -> None:
    workload = tmp_path / "six.csv"
    workload.write_text(SIX_JOBS)
    result = CliRunner().invoke(app, [
        "simulate", str(workload), "-c", "pollux64", "-p", "fifo",
        "--data", str(data_root), "--plot", str(tmp_path / "out.xyz"),
    ])
    assert result.exit_code == 2 and result.stdout == ""
    assert "out.xyz" in result.stderr and len(result.stderr.strip().splitlines()) == 1
