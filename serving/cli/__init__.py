"""The `nextbest` command line: serve, train, models, demo, status, bench.

One module per command group, over one HTTP client (`client.py`) and with what is shown
built apart from what is called (`render.py`):

    run.py        serve, demo
    training.py   train, retrain, simulate, evaluate
    models.py     models deploy | register | sign | list | promote | rollback | split | stats
    catalog.py    catalog apply | rollback | show; context load | show
    ops.py        status, keys new, bench
    shards.py     shards [scale | move | rebalance]
"""

from __future__ import annotations

import sys

import typer

from serving.cli import catalog, models, ops, run, shards, training

__all__ = ["app", "main"]

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="nextbest: real-time next-best-action server on Ray.",
)
app.add_typer(models.models_app, name="models")
app.command()(run.serve)
app.command("train")(training.train_cmd)
app.command("retrain")(training.retrain_cmd)
app.command("simulate")(training.simulate_cmd)
app.command("evaluate")(training.evaluate_cmd)
app.command()(run.demo)
app.command()(ops.status)
app.add_typer(catalog.catalog_app, name="catalog")
app.add_typer(catalog.context_app, name="context")
app.add_typer(ops.keys_app, name="keys")
app.add_typer(shards.shards_app, name="shards")
app.command()(ops.bench)


def main() -> None:
    """The console script `nextbest`."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
