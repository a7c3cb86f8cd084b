from __future__ import annotations

from pathlib import Path

import pytest

from thrifty.errors import InputError
from thrifty.sim.cluster import load_cluster
from thrifty.sim.workload import load_workload, scale_load, workload_files

HEADER = "name,time,application,num_replicas,batch_size\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("a,10,cifar10,1,128\nb,x,cifar10,1,128\n", r"w.csv:3: field 'time': expected a number"),
        ("a,10,cifar10,0,128\n", r"w.csv:2: field 'num_replicas': must be positive"),
        ("a,10,gpt5,1,128\n", r"w.csv:2: field 'application': unknown application 'gpt5'"),
        ("a,10,cifar10,1,128\na,20,cifar10,1,128\n", r"w.csv:3: field 'name': duplicate"),
        ("a,10,cifar10,1,128,extra\n", r"w.csv:2: more fields"),
        ("a,10,cifar10,1,12.5\n", r"w.csv:2: field 'batch_size': expected an integer"),
    ],
)
def test_malformed_workload_rows_name_file_line_and_field(
    tmp_path: Path, body: str, match: str
) -> None:
    path = write(tmp_path, "w.csv", HEADER + body)
    with pytest.raises(InputError, match=match):
        load_workload(path, ["cifar10", "ncf"])


def test_workload_files_and_load_scaling(tmp_path: Path) -> None:
    write(tmp_path, "b.csv", HEADER + "j,100,ncf,1,32768\n")
    write(tmp_path, "a.csv", HEADER + "j,50,ncf,1,32768\n")
    files = workload_files([tmp_path])
    assert [f.name for f in files] == ["a.csv", "b.csv"]
    doubled = scale_load(load_workload(files[1]), 2.0)
    assert doubled.jobs[0].submit_time == 50.0
    with pytest.raises(InputError, match="missing column"):
        load_workload(write(tmp_path, "c.csv", "name,time\nx,1\n"))
    with pytest.raises(InputError, match="not found"):
        load_workload(tmp_path / "nope.csv")


def test_builtin_clusters_match_the_papers() -> None:
    pollux = load_cluster("pollux64")
    assert pollux.num_gpus == 64 and len(pollux.nodes) == 16 and pollux.kinds == ("aws",)
    sia = load_cluster("sia-hetero64")
    assert sia.num_gpus == 64
    assert {k: sum(n.num_gpus for n in sia.nodes if n.gpu_kind == k) for k in sia.kinds} == {
        "aws": 24, "rtx": 24, "dgx-ext": 16
    }
    assert sia.delay("imagenet") == 250 and sia.delay("unknown") == 30
    assert sia.local_cap("deepspeech2", "rtx") == 57 and sia.local_cap("deepspeech2", "aws") is None


def test_cluster_toml_is_read_and_validated(tmp_path: Path) -> None:
    good = write(tmp_path, "c.toml", """
name = "lab"
profiles = "sia"
restart_delay = 45
[[nodes]]
kind = "rtx"
count = 2
gpus = 8
[[nodes]]
kind = "dgx-ext"
gpus = 8
""")
    cluster = load_cluster(str(good))
    assert cluster.num_gpus == 24 and cluster.delay("cifar10") == 45
    assert [n.name for n in cluster.nodes] == ["rtx-0", "rtx-1", "dgx-ext-0"]
    bad_kind = write(tmp_path, "k.toml", '[[nodes]]\nkind = "h100"\n')
    with pytest.raises(InputError, match=r"k.toml: field 'nodes\[0\].kind': unknown GPU kind"):
        load_cluster(str(bad_kind))
    bad_count = write(tmp_path, "n.toml", '[[nodes]]\nkind = "aws"\ncount = -1\n')
    with pytest.raises(InputError, match=r"field 'nodes\[0\].count'"):
        load_cluster(str(bad_count))
    with pytest.raises(InputError, match="no such cluster file"):
        load_cluster(str(tmp_path / "missing.toml"))
    broken = write(tmp_path, "b.toml", "nodes = [")
    with pytest.raises(InputError, match="not valid TOML"):
        load_cluster(str(broken))
