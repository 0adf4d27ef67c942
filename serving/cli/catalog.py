"""`nextbest catalog ...` and `nextbest context ...`: what the running shards decide
with besides models (the action catalog, external context tables), changed at runtime
on every shard at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from serving.cli import client
from serving.cli.common import DEFAULT_CONFIG, ConfigOpt, UrlOpt, fail, read_config

__all__ = ["catalog_app", "context_app"]

catalog_app = typer.Typer(
    help="The action catalog: show, apply at runtime, roll back.", no_args_is_help=True
)
context_app = typer.Typer(
    help="External context tables: load a version, show what the shards serve.",
    no_args_is_help=True,
)


@catalog_app.command("apply")
def catalog_apply(
    path: Annotated[Path, typer.Argument(help="YAML (or JSON) with actions and decisioning.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    url: UrlOpt = None,
) -> None:
    """Validate, version and swap the catalog on every shard at once (the previous one
    stays available: `nextbest catalog rollback`)."""
    import yaml

    cfg = read_config(config)
    try:
        catalog = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise fail(f"cannot read {path}: {e}") from None
    if isinstance(catalog, dict):  # a whole config file: take its catalog sections
        from decisioning.stores.catalogs import CATALOG_KEYS

        catalog = {k: v for k, v in catalog.items() if k in CATALOG_KEYS}
    out = client.call(cfg, url, "PUT", "/v1/catalog", admin=True, timeout=120, json=catalog)
    if not out["changed"]:
        typer.echo(f"catalog {out['version']} is already served")
    else:
        typer.echo(f"catalog {out['version']} served by {out['shards']} shards")


@catalog_app.command("rollback")
def catalog_rollback(config: ConfigOpt = DEFAULT_CONFIG, url: UrlOpt = None) -> None:
    """Serve the catalog before the current one again, on every shard at once."""
    cfg = read_config(config)
    out = client.admin_post(cfg, url, "/v1/catalog/rollback", {})
    typer.echo(f"catalog {out['version']} served again by {out['shards']} shards")


@catalog_app.command("show")
def catalog_show(config: ConfigOpt = DEFAULT_CONFIG, url: UrlOpt = None) -> None:
    """The catalog the running shards serve, as JSON."""
    catalog = client.call(read_config(config), url, "GET", "/v1/catalog", admin=True)
    typer.echo(json.dumps(catalog, indent=2))


@context_app.command("load")
def context_load(
    table: Annotated[str, typer.Argument(help="The table's name under context_tables.")],
    path: Annotated[Path, typer.Argument(help="A Parquet (or CSV) file: key and columns.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    url: UrlOpt = None,
) -> None:
    """Push a new version of a context table: checked, stored, broadcast and swapped on
    every shard at once (needs a key with the context:write scope)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    cfg = read_config(config)
    try:
        if path.suffix.lower() == ".csv":  # sent as Parquet: types and all
            sink = pa.BufferOutputStream()
            pq.write_table(pacsv.read_csv(str(path)), sink)
            body = sink.getvalue().to_pybytes()
        else:
            body = path.read_bytes()
    except (OSError, pa.ArrowException) as e:
        raise fail(f"cannot read {path}: {e}") from None
    parquet = {"content-type": "application/vnd.apache.parquet"}
    out = client.call(
        cfg, url, "PUT", f"/v1/context/{table}", timeout=300, extra_headers=parquet, content=body
    )
    typer.echo(f"{table} {out['version']}: {out['rows']} rows served by {out['shards']} shards")


@context_app.command("show")
def context_show(config: ConfigOpt = DEFAULT_CONFIG, url: UrlOpt = None) -> None:
    """Each context table and the version each shard serves, as JSON."""
    typer.echo(json.dumps(client.call(read_config(config), url, "GET", "/v1/context"), indent=2))
