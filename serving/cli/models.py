"""`nextbest models ...`: model versions in the registry, and what the running shards
serve (deploy, promote, roll back, split, stats)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from decisioning.config import Secrets
from decisioning.errors import NextbestError
from decisioning.policy.scoring import read_model_dir
from decisioning.stores.registry import Registry
from serving.cli import client, render
from serving.cli.common import DEFAULT_CONFIG, ConfigOpt, UrlOpt, fail, read_config

__all__ = ["models_app"]

models_app = typer.Typer(
    no_args_is_help=True, help="Model versions: list, deploy, promote, roll back, split, stats."
)
ModelName = Annotated[str, typer.Argument(help="Model name, e.g. propensity.")]


@models_app.command("deploy")
def models_deploy(
    path: Annotated[Path, typer.Argument(help="Model version directory.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    url: UrlOpt = None,
) -> None:
    """Load a model version into every running shard, without a restart."""
    cfg = read_config(config)
    try:
        bundle = read_model_dir(path)
    except NextbestError as e:
        raise fail(f"refused: {e}") from None
    body = {"manifest": bundle.manifest.to_dict(), "model_text": bundle.model_text}
    typer.echo(f"deploying {bundle.manifest.ref} (compiling to native code takes seconds)…")
    out = client.call(cfg, url, "POST", "/v1/models/deploy", admin=True, timeout=120, json=body)
    typer.echo(f"deployed {out['deployed']} to {out['shards']} shards")


@models_app.command("register")
def models_register(
    model_file: Annotated[Path, typer.Argument(help="A LightGBM text model (model.txt).")],
    name: Annotated[str, typer.Option(help="Model name (actions refer to it).")],
    feature_map: Annotated[
        Path | None, typer.Option(help="YAML: features {theirs: ours}, categories {f: [...]}.")
    ] = None,
    check_table: Annotated[
        Path | None,
        typer.Option(help="Parquet/CSV rows it was fitted on: they must score the same served."),
    ] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Register a LightGBM model trained elsewhere as the next version of NAME (its
    features must resolve to nextbest's, or it is refused with the missing ones)."""
    from training.register import register_external
    from training.train import read_table

    cfg = read_config(config)
    try:
        table = None if check_table is None else read_table(check_table)
        m = register_external(model_file, cfg, name, feature_map, table)
    except NextbestError as e:
        raise fail(str(e)) from None
    typer.echo(f"registered {m.ref} ({len(m.features)} features)")
    if check_table is not None:
        typer.echo(f"checked: the {m.training['checked_rows']} rows score the same as served")
    typer.echo(
        f"serve it with: nextbest models promote {name} --version {m.version}  "
        f"(or split {name} --version {m.version} --share 0.1)"
    )


@models_app.command("sign")
def models_sign(
    path: Annotated[Path, typer.Argument(help="Model version directory.")],
    config: ConfigOpt = DEFAULT_CONFIG,
) -> None:
    """Sign a model version (e.g. one trained elsewhere) with the key named by
    auth.model_key_env, so servers that require signatures accept it."""
    from decisioning.policy.scoring import sign, write_model_dir

    cfg = read_config(config)
    if cfg.auth.model_key_env is None:
        raise fail("auth.model_key_env is not set: there is no signing key to use")
    try:
        bundle = read_model_dir(path)
        key = Secrets.resolve(cfg, os.environ).model_key()
    except NextbestError as e:
        raise fail(f"refused: {e}") from None
    assert key is not None
    signed = bundle.__class__(sign(bundle.manifest, key), bundle.model_text)
    write_model_dir(path, signed)
    typer.echo(f"signed {signed.manifest.ref} ({path})")


@models_app.command("list")
def models_list(config: ConfigOpt = DEFAULT_CONFIG, url: UrlOpt = None) -> None:
    """Model versions in the registry, and what each running shard serves."""
    cfg = read_config(config)
    registry = Registry(cfg.server.data_dir)
    for name in registry.names():
        a = registry.aliases(name)
        for v in registry.versions(name):
            m = registry.read(name, v).manifest
            alias = ""
            if v == a.champion:
                alias = "champion"
            elif v == a.challenger:
                alias = "shadow" if a.shadow else f"challenger {a.share:.0%}"
            typer.echo(render.registry_line(m.ref, alias, m.metrics.get("auc"), m.created_at))
    try:
        r = client.request(cfg, url, "GET", "/v1/models", admin=True, timeout=10)
        typer.echo("serving: " + json.dumps(r.json()["shards"]))
    except client.Unreachable:
        typer.echo("serving: (server not reachable)")


@models_app.command("promote")
def models_promote(
    name: ModelName,
    version: Annotated[int | None, typer.Option(help="Default: the challenger.")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    url: UrlOpt = None,
) -> None:
    """Make a version the champion on every shard at once (the old one can be rolled
    back to)."""
    cfg = read_config(config)
    out = client.admin_post(cfg, url, f"/v1/models/{name}/promote", {"version": version})
    typer.echo(render.rollout(out))


@models_app.command("rollback")
def models_rollback(
    name: ModelName, config: ConfigOpt = DEFAULT_CONFIG, url: UrlOpt = None
) -> None:
    """Serve the champion before this one again, on every shard at once."""
    cfg = read_config(config)
    typer.echo(render.rollout(client.admin_post(cfg, url, f"/v1/models/{name}/rollback", {})))


@models_app.command("split")
def models_split(
    name: ModelName,
    version: Annotated[int | None, typer.Option(help="The challenger version.")] = None,
    share: Annotated[float, typer.Option(help="Share of customers (sticky).")] = 0.1,
    shadow: Annotated[bool, typer.Option(help="Score and log it, never use it.")] = False,
    end: Annotated[bool, typer.Option(help="End the challenger.")] = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    url: UrlOpt = None,
) -> None:
    """Start a challenger for a share of customers (or in shadow), or --end it."""
    if (version is None) != end:
        raise fail("give --version N to start a challenger, or --end to end it")
    cfg = read_config(config)
    body = {"version": version, "share": share, "shadow": shadow}
    typer.echo(render.rollout(client.admin_post(cfg, url, f"/v1/models/{name}/split", body)))


@models_app.command("stats")
def models_stats(config: ConfigOpt = DEFAULT_CONFIG, url: UrlOpt = None) -> None:
    """Live metrics per model version (since the shards started): decisions,
    impressions, accepts, accept rate."""
    cfg = read_config(config)
    out = client.call(
        cfg, url, "GET", "/v1/models/stats", admin=True, timeout=10, failed="stats failed"
    )
    for line in render.stats_lines(out["models"]):
        typer.echo(line)
