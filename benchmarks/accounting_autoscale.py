"""Autoscaling a cloud cluster by goodput against a fixed one: money saved, time lost.

A cloud bills every node held, busy or idle. The fixed cluster is `pollux64`'s 16 AWS g4dn.12xlarge
nodes (4 × T4, USD 3.912 per node-hour) held for the whole run; the autoscaled one rents the same
nodes, up to 16, only while the jobs' goodput makes them worth their price (`thrifty.sim.autoscale`:
a node is added while its marginal goodput per dollar is at least `--threshold` × the cluster's
average; idle nodes are given back; a node boots for `--delay` seconds, billed). Both run the
same policy (default: thrifty's own, the default of `thrifty simulate`) through the code behind
`thrifty simulate`, in this one run:

(a) one ImageNet (ResNet-50) job alone, fixed 16 nodes against 1..16 autoscaled nodes: completion
    time, node-hours and USD, their ratios, and how the ratios move with the threshold;
(b) a whole workload (Pollux workload `--workload`, 160 jobs over 8 hours), fixed against 0..16
    autoscaled nodes: average JCT, makespan, node-hours and USD, and their ratios.

The Pollux paper (OSDI'21 §5.4) reports ImageNet training 25 % cheaper for 6 % longer with its
goodput-driven autoscaling; the figures printed here are this simulator's own.

    python benchmarks/accounting_autoscale.py [--policy thrifty] [--workload 1] [--threshold 0.5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from thrifty.cli.options import resolve_data
from thrifty.policy.autoscale import AutoscaleConfig
from thrifty.sim.metrics import Summary
from thrifty.sim.runner import RunSpec, run

NODES = 16
PRICE = 3.912  # USD per g4dn.12xlarge-hour, on demand (shared/data/prices/cloud-gpu-prices.csv)
SWEEP = (0.25, 0.35, 0.5, 0.7)
IMAGENET = "name,time,application,num_replicas,batch_size\nimagenet-0,0,imagenet,32,6400\n"


def cluster_file(folder: Path, config: AutoscaleConfig) -> Path:
    """`pollux64`'s nodes and settings, with an [autoscale] table."""
    path = folder / f"cloud-t4-{config.min_nodes}-{config.grow_threshold:g}.toml"
    path.write_text(
        'name = "cloud-t4"\nprofiles = "pollux"\nrestart_delay = 30\n'
        '[local_bsz_caps.yolov3]\n"*" = 8\n'
        f'[[nodes]]\nkind = "aws"\ncount = {NODES}\ngpus = 4\nprice_per_hour = {PRICE}\n'
        f"[autoscale]\nmin_nodes = {config.min_nodes}\nmax_nodes = {config.max_nodes}\n"
        f"provision_delay_s = {config.provision_delay_s}\n"
        f"grow_threshold = {config.grow_threshold}\n"
        f"shrink_threshold = {config.shrink_threshold}\n"
    )
    return path


def simulate(policy: str, workload: Path, cluster: Path, root: Path, autoscale: bool,
             load: float = 1.0) -> tuple[Summary, float]:
    started = time.perf_counter()
    summary = run(RunSpec(policy, workload, str(cluster), root, load=load, autoscale=autoscale))
    return summary, time.perf_counter() - started


def config(min_nodes: int, threshold: float, delay: float) -> AutoscaleConfig:
    return AutoscaleConfig(min_nodes=min_nodes, max_nodes=NODES, provision_delay_s=delay,
                           grow_threshold=threshold,
                           shrink_threshold=min(AutoscaleConfig.shrink_threshold, threshold))


def row(label: str, s: Summary, wall: float, jct: str) -> str:
    return (f"{label:<22} {getattr(s, jct) / 3600:>9.3f} {s.makespan_s / 3600:>10.2f} "
            f"{s.node_hours:>8.1f} {s.held_usd:>9.2f} {s.usd:>10.2f} {s.restarts_per_job:>9.2f} "
            f"{wall:>6.1f}")


def header(jct: str) -> str:
    return (f"{'':<22} {jct:>9} {'makespan h':>10} {'node-h':>8} {'held USD':>9} "
            f"{'alloc USD':>10} {'restarts':>9} {'wall s':>6}")


def ratios(fixed: Summary, scaled: Summary, jct: str) -> str:
    return (f"{'autoscaled / fixed':<22} {getattr(scaled, jct) / getattr(fixed, jct):>9.3f} "
            f"{scaled.makespan_s / fixed.makespan_s:>10.3f} "
            f"{scaled.node_hours / fixed.node_hours:>8.3f} "
            f"{scaled.held_usd / fixed.held_usd:>9.3f} {scaled.usd / fixed.usd:>10.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="thrifty")
    parser.add_argument("--workload", default="1", help="Pollux workload number (1-4, 6)")
    parser.add_argument("--threshold", type=float, default=AutoscaleConfig.grow_threshold,
                        help="grow threshold of the autoscaled runs")
    parser.add_argument("--delay", type=float, default=AutoscaleConfig.provision_delay_s,
                        help="seconds a node takes to boot (billed)")
    parser.add_argument("--load", type=float, default=1.0, help="(b): relative arrival rate")
    parser.add_argument("--skip-workload", action="store_true", help="run (a) only")
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    root = resolve_data(args.data)
    with tempfile.TemporaryDirectory(prefix="thrifty-autoscale-") as tmp:
        folder = Path(tmp)
        job = folder / "imagenet-alone.csv"
        job.write_text(IMAGENET)
        print(f"policy {args.policy}; {NODES} × 4 T4 nodes at USD {PRICE}/node-hour; node boot "
              f"{args.delay:g} s (billed); grow threshold {args.threshold:g}, shrink "
              f"{min(AutoscaleConfig.shrink_threshold, args.threshold):g}")
        print(f"\n(a) one ImageNet job: fixed {NODES} nodes vs autoscaled 1..{NODES}")
        print(header("JCT h"))
        fixed_file = cluster_file(folder, config(1, args.threshold, args.delay))
        fixed, wall = simulate(args.policy, job, fixed_file, root, autoscale=False)
        print(row(f"fixed {NODES} nodes", fixed, wall, "avg_jct_s"))
        scaled, wall = simulate(args.policy, job, fixed_file, root, autoscale=True)
        print(row("autoscaled", scaled, wall, "avg_jct_s"))
        print(ratios(fixed, scaled, "avg_jct_s"))
        print("\n    threshold sweep (autoscaled / fixed): threshold, JCT, held USD")
        for threshold in SWEEP:
            path = cluster_file(folder, config(1, threshold, args.delay))
            swept, _ = simulate(args.policy, job, path, root, autoscale=True)
            print(f"    {threshold:>9g} {swept.avg_jct_s / fixed.avg_jct_s:>6.3f} "
                  f"{swept.held_usd / fixed.held_usd:>8.3f}")
        if args.skip_workload:
            return
        source = root / "pollux" / "workloads" / f"workload-{args.workload}.csv"
        print(f"\n(b) Pollux workload {args.workload} (load × {args.load:g}): fixed {NODES} "
              f"nodes vs autoscaled 0..{NODES}")
        print(header("avg JCT h"))
        path = cluster_file(folder, config(0, args.threshold, args.delay))
        fixed, wall = simulate(args.policy, source, path, root, False, args.load)
        print(row(f"fixed {NODES} nodes", fixed, wall, "avg_jct_s"))
        scaled, wall = simulate(args.policy, source, path, root, True, args.load)
        print(row("autoscaled", scaled, wall, "avg_jct_s"))
        print(ratios(fixed, scaled, "avg_jct_s"))


if __name__ == "__main__":
    main()
