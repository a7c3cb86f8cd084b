"""Scheduling policies: pure functions of job and cluster views, one module each."""

from thrifty.policy.base import Allocation, ClusterView, JobView, NodeView, Policy

__all__ = ["Allocation", "ClusterView", "JobView", "NodeView", "Policy"]
