"""Workloads may say whose job each is; files without owners load as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from thrifty.errors import InputError
from thrifty.sim.workload import load_workload


def test_owner_columns_are_optional(tmp_path: Path, data_root: Path) -> None:
    plain = load_workload(data_root / "pollux" / "workloads" / "workload-1.csv")
    assert len(plain.jobs) == 160 and all(j.owner == "" for j in plain.jobs)
    path = tmp_path / "w.csv"
    path.write_text("name,time,application,num_replicas,batch_size,user,team\n"
                    "a,0,ncf,1,32768,ann,vision\nb,5,ncf,1,32768,,nlp\nc,9,ncf,1,32768,,\n")
    jobs = {j.name: j for j in load_workload(path).jobs}
    assert jobs["a"].owner == "vision/ann" and jobs["b"].owner == "nlp/nlp"
    assert jobs["c"].owner == ""
    path.write_text("name,time,application,num_replicas,batch_size,team\na,0,ncf,1,1,x/y\n")
    with pytest.raises(InputError, match=r"w\.csv:2: field 'team'"):
        load_workload(path)
