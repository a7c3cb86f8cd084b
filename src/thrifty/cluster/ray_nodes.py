"""What a Ray cluster's nodes are to thrifty: a name, a GPU kind and a number of slots each.

Nodes declare their GPU kind with a node label, `ray start --labels thrifty.gpu-kind=A100`, or a
custom resource, `--resources '{"gpu-kind:A100": 1}'`; otherwise Ray's own accelerator type is
used. A node without GPUs offers one CPU replica per CPU. Pure functions over what `ray.nodes()`
returns, so they are tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from thrifty.policy.base import NodeView

GPU_KIND_LABEL = "thrifty.gpu-kind"
GPU_KIND_RESOURCE = "gpu-kind:"  # a custom resource "gpu-kind:T4" marks a node of T4s
NODE_NAME_LABEL = "thrifty.node-name"
_RAY_ACCELERATOR_LABEL = "ray.io/accelerator-type"
_RAY_ACCELERATOR_RESOURCE = "accelerator_type:"


def node_kind(node: Mapping[str, Any]) -> str | None:
    """The GPU kind a node declares, or None when it says nothing."""
    labels = node.get("Labels") or {}
    if labels.get(GPU_KIND_LABEL):
        return str(labels[GPU_KIND_LABEL])
    resources = node.get("Resources") or {}
    for prefix in (GPU_KIND_RESOURCE, _RAY_ACCELERATOR_RESOURCE):
        for key in resources:
            if key.startswith(prefix) and len(key) > len(prefix):
                return key[len(prefix):]
    if labels.get(_RAY_ACCELERATOR_LABEL):
        return str(labels[_RAY_ACCELERATOR_LABEL])
    return None


def node_index(alive: Sequence[dict[str, Any]]) -> dict[str, tuple[NodeView, dict[str, Any]]]:
    """Alive nodes by thrifty name: label, else IP (with the id when IPs repeat)."""
    ips = [n["NodeManagerAddress"] for n in alive]
    index: dict[str, tuple[NodeView, dict[str, Any]]] = {}
    for node in alive:
        ip = node["NodeManagerAddress"]
        name = (node.get("Labels") or {}).get(NODE_NAME_LABEL) or (
            ip if ips.count(ip) == 1 else f"{ip}/{node['NodeID'][:8]}")
        resources = node.get("Resources") or {}
        gpus = int(resources.get("GPU", 0))
        if gpus > 0:
            view = NodeView(name, node_kind(node) or "gpu", gpus)
        else:
            view = NodeView(name, "cpu", int(resources.get("CPU", 0)))
        if view.num_gpus > 0:
            index[name] = (view, node)
    return index
