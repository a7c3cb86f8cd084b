"""Trace-driven cluster simulation over measured job profiles."""

from thrifty.sim.cluster import ClusterSpec, NodeSpec, load_cluster
from thrifty.sim.engine import SimResult, SimSettings, simulate
from thrifty.sim.metrics import Summary, summarize
from thrifty.sim.profiles import ProfileSet
from thrifty.sim.runner import RunSpec, run
from thrifty.sim.workload import TraceJob, Workload, load_workload

__all__ = [
    "ClusterSpec",
    "NodeSpec",
    "ProfileSet",
    "RunSpec",
    "SimResult",
    "SimSettings",
    "Summary",
    "TraceJob",
    "Workload",
    "load_cluster",
    "load_workload",
    "run",
    "simulate",
    "summarize",
]
