"""``cpabanim ui``: open the project's runs in the MLflow UI, in its model-training layout.

    cpabanim ui                     # serve the project's sqlite store (mlflow ui) and print the page to open
    cpabanim ui --port 5001         # another port
    cpabanim ui --print-url         # only print the page (with a remote server: the address to open)

MLflow 3's UI opens every experiment in its GenAI layout (traces, prompts) unless the address asks for the
model-training one: the browser remembers the choice, the experiment's tag does not decide it. This command
prints the address that asks for it (docs/pipeline.md, "MLflow").
"""

from __future__ import annotations

import argparse

from cpabanim.config.layers import add_params_arguments, params_from_args
from cpabanim.errors import CpabanimError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_arguments(parser, preset=False, experiment=False)  # it reads tracking.* only: params.yaml or --set
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to serve on (default 5000)")
    parser.add_argument("--print-url", action="store_true", help="print the page to open and exit")


def experiment_page(base_url: str, experiment_id: str | None) -> str:
    """The UI page of one experiment's runs (the experiment list without an id), in the model-training layout."""
    route = f"experiments/{experiment_id}/runs" if experiment_id else "experiments"
    return f"{base_url.rstrip('/')}/#/{route}?workflowType=machine_learning"


def experiment_id(uri: str, name: str) -> str | None:
    """The id of experiment ``name`` in the store at ``uri``, None when it has no such experiment yet."""
    import mlflow

    experiment = mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    return experiment.experiment_id if experiment else None


def run(args: argparse.Namespace) -> int:
    from cpabanim.tracking.store import check_store, check_uri, sqlite_path, tracking_uri

    params = params_from_args(args)
    uri = tracking_uri(params)
    check_uri(uri)
    check_store(uri)  # a server that does not answer, a corrupt sqlite file: one line, before MLflow's retries
    remote = uri.startswith(("http://", "https://"))
    database = sqlite_path(uri)
    if database is not None and not database.is_file():
        raise CpabanimError(f"no MLflow store at {uri} yet: run the pipeline first (`snakemake --cores all`)")
    base = uri if remote else f"http://{args.host}:{args.port}"
    page = experiment_page(base, experiment_id(uri, params["tracking"]["experiment"]))
    print(f"MLflow UI, runs of experiment {params['tracking']['experiment']!r}: {page}", flush=True)
    if remote or args.print_url:
        return 0
    from cpabanim.commands.tracking_server import exec_mlflow

    # one person looking at one project's runs: one worker process (MLflow starts 4); with exec_mlflow's job runners
    # off, the page answers after 17 s on 2 idle cores, not 41 s
    exec_mlflow("ui", uri, args.host, args.port, "--workers", "1")
    return 0  # not reached
