"""Admission: a spec that validates may still be one this cluster can never run.

The spec model checks what a spec says on its own (`thrifty.cluster.spec`); this checks it against
the cluster it was sent to: GPU kinds the executor's nodes have, how many replicas they could ever
give at once of the kinds the job allows, and, where replicas run on this machine, that the
working folder exists. A job refused here would otherwise be stored and wait forever (or fail
through every retry); refused at submission, its owner hears why at once, field by field, in the
same problems a spec that does not validate gets.

With no nodes at all (a Ray cluster whose nodes have all gone for the moment) nothing is known of
the cluster, so only the working folder is checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from thrifty.cluster.reasons import CPU, units
from thrifty.cluster.spec import JobSpec, SpecError
from thrifty.policy.base import NodeView


def problems(spec: JobSpec, nodes: Sequence[NodeView],
             shares_filesystem: bool) -> list[tuple[str, str]]:
    """Every reason `spec` can never run on `nodes`, as (field, message) pairs."""
    out: list[tuple[str, str]] = []
    resources = spec.resources
    known = sorted({n.gpu_kind for n in nodes})
    listed = ", ".join(known)
    allowed = resources.allowed_kinds()
    usable = known if allowed is None else [k for k in allowed if k in known]
    if nodes and resources.cpu_only and CPU not in known:
        out.append(("resources.cpu_only", f"this cluster has no CPU slots, only GPUs "
                                          f"({listed}); drop cpu_only"))
    elif nodes and resources.gpu_kinds:
        unknown = [k for k in resources.gpu_kinds if k not in known]
        if unknown:
            out.append(("resources.gpu_kinds", f"unknown GPU kind(s) {', '.join(unknown)}; "
                                               f"this cluster's kinds are: {listed}"))
    if usable:
        most, kind = max((sum(n.num_gpus for n in nodes if n.gpu_kind == k), k) for k in usable)
        need = spec.requested_replicas()
        if need > most:
            field = "resources.max_replicas" if not spec.adaptive else "resources.min_replicas"
            how = "a rigid job gets exactly max_replicas" if not spec.adaptive else \
                "an adaptive job needs at least min_replicas"
            out.append((field, f"{need} replicas can never run here ({how}): the most this "
                               f"cluster could ever give is {units(kind, most)}; ask for "
                               f"{most} or fewer"))
    if shares_filesystem:
        folder = Path(spec.working_dir)
        if not folder.exists():
            out.append(("working_dir", f"{spec.working_dir} does not exist on the machine the "
                                       "replicas run on; create it or name an existing folder"))
        elif not folder.is_dir():
            out.append(("working_dir", f"{spec.working_dir} is not a folder; name the folder "
                                       "the job runs in"))
    return out


def admit(spec: JobSpec, nodes: Sequence[NodeView], shares_filesystem: bool) -> JobSpec:
    """`spec`, when the cluster could run it; a `SpecError` listing every problem otherwise."""
    found = problems(spec, nodes, shares_filesystem)
    if found:
        raise SpecError(found)
    return spec
