"""`thrifty workload generate`: larger clusters and workloads sampled from measured ones."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from thrifty.cli.options import check_folder, cluster_option, data_option, resolve_data
from thrifty.cli.output import fail, results_console
from thrifty.cli.tables import generate_table
from thrifty.errors import ThriftyError
from thrifty.sim.cluster import load_cluster
from thrifty.sim.profiles import ProfileSet
from thrifty.sim.workload import load_workload, workload_files

workload_app = typer.Typer(
    help="Sample larger clusters and workloads from measured ones.", no_args_is_help=True
)


@workload_app.command("generate")
def workload_generate(
    bases: Annotated[
        list[Path],
        typer.Argument(help="Base workload CSV files or folders: the jobs and gaps to resample.",
                       show_default=False),
    ],
    cluster: Annotated[str, cluster_option("Base cluster")],
    cluster_out: Annotated[
        Path, typer.Option(help="Where to write the scaled cluster TOML.", show_default=False)
    ],
    workload_out: Annotated[
        Path, typer.Option(help="Where to write the generated workload CSV.", show_default=False)
    ],
    node_scale: Annotated[
        float, typer.Option(help="Nodes of every group of the base cluster × this.")
    ] = 1.0,
    rate_scale: Annotated[
        float | None,
        typer.Option(help="Jobs arrive this many times as fast as in the bases "
                     "(default: the node scale, the same load per GPU).", show_default=False),
    ] = None,
    duration: Annotated[
        str | None,
        typer.Option(help="Arrivals span this long: seconds or 30m, 8h, 1d (default: as long "
                     "as the longest base).", show_default=False),
    ] = None,
    jobs: Annotated[
        int | None,
        typer.Option(help="Generate exactly this many jobs instead of a duration.",
                     show_default=False),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed: the same inputs and seed give the same files.")]
    = 0,
    name: Annotated[
        str | None,
        typer.Option(help="Name of the generated cluster (default: <base>x<node scale>).",
                     show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing output files.")] = False,
    data: Annotated[
        Path | None, data_option("Folder of measured profiles, to check the applications")
    ] = None,
) -> None:
    """Scale a cluster and resample a workload from measured ones, e.g. 32× nodes and arrivals."""
    from thrifty.sim import generate

    try:
        for path, flag in ((cluster_out, "--cluster-out"), (workload_out, "--workload-out")):
            check_output(path, flag, force)
        base_cluster = load_cluster(cluster)
        applications = ProfileSet(resolve_data(data), base_cluster.profiles).applications
        files = workload_files(bases)
        loaded = [load_workload(path, applications) for path in files]
        scaled = generate.scale_cluster(base_cluster, node_scale, name)
        seconds = None if duration is None else generate.parse_duration(duration)
        workload = generate.generate_workload(
            loaded, rate_scale=node_scale if rate_scale is None else rate_scale,
            duration=seconds, jobs=jobs, seed=seed, name=workload_out.stem,
        )
    except ThriftyError as err:
        fail(err)
    origin = (f"thrifty workload generate: {base_cluster.name} x {node_scale:g} nodes, "
              f"seed {seed}")
    cluster_out.write_text(generate.cluster_toml(scaled, comment=origin))
    workload_out.write_text(generate.workload_csv(workload))
    rows = generate.comparison(loaded, base_cluster, workload, scaled)
    results_console().print(generate_table(rows))
    sys.stderr.write(f"wrote {cluster_out} and {workload_out}\n")


def check_output(path: Path, flag: str, force: bool) -> None:
    """An output file's folder must exist, and the file itself only with --force."""
    check_folder(path, flag)
    if path.exists() and not force:
        raise ThriftyError(f"{path}: {flag} exists; pass --force to overwrite it")


def register(app: typer.Typer) -> None:
    app.add_typer(workload_app, name="workload")
