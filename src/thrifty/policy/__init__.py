"""Scheduling policies: pure functions of job and cluster views, one module each."""

from thrifty.policy.base import (
    Allocation,
    BasePolicy,
    ClusterView,
    JobView,
    NodeView,
    Oracle,
    Policy,
    PolicyWrapper,
)

__all__ = [
    "Allocation",
    "BasePolicy",
    "ClusterView",
    "JobView",
    "NodeView",
    "Oracle",
    "Policy",
    "PolicyWrapper",
]
