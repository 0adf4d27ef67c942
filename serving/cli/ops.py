"""`nextbest status`, `nextbest keys new` and `nextbest bench`: how the running shards
are, who may call them, and how fast they answer."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from decisioning.config import SCOPES, ApiKeySpec
from serving.cli import client, render
from serving.cli.common import DEFAULT_CONFIG, ConfigOpt, UrlOpt, fail, read_config

__all__ = ["bench", "keys_app", "status"]

keys_app = typer.Typer(help="API keys: make one for a client.", no_args_is_help=True)


def status(
    config: ConfigOpt = DEFAULT_CONFIG,
    url: UrlOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Every field, one JSON per shard.")
    ] = False,
) -> None:
    """Each shard: ready, generation (starts), customers, WAL size, last snapshot, last
    recovery, scorer, counters."""
    cfg = read_config(config)
    out = client.call(cfg, url, "GET", "/v1/status", admin=True, timeout=10, failed="status failed")
    if as_json:
        for s in out["shards"]:
            typer.echo(json.dumps(s))
    else:
        typer.echo(render.status_table(out["shards"]))


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Option(help="Who gets the key (a client or channel).")],
    scope: Annotated[list[str], typer.Option(help=f"Repeat for each scope: {', '.join(SCOPES)}.")],
) -> None:
    """Print a new random API key once, and the config entry (its sha256) to add."""
    from serving.auth import new_key, sha256_hex

    bad = [s for s in scope if s not in SCOPES]
    if bad:
        raise fail(f"unknown scope(s) {', '.join(bad)}; known: {', '.join(SCOPES)}")
    try:
        ApiKeySpec(name=name, sha256="0" * 64, scopes=scope)  # type: ignore[arg-type]
    except ValueError as e:
        raise fail(f"invalid key name {name!r}: {e}") from None
    key = new_key()
    typer.echo(f"API key for {name} (shown once; give it to the client, store it nowhere else):")
    typer.echo(f"  {key}")
    typer.echo("add to the config under auth.keys:")
    entry = {"name": name, "sha256": sha256_hex(key), "scopes": scope}
    typer.echo(f"  - {json.dumps(entry)}")


def bench(
    config: ConfigOpt = DEFAULT_CONFIG,
    seconds: Annotated[float, typer.Option(help="Seconds per load step.")] = 5.0,
    connections: Annotated[int, typer.Option(help="Concurrent connections.")] = 32,
    profiles: Annotated[int, typer.Option(help="Profiles for the memory figure.")] = 1_000_000,
) -> None:
    """Measure the floor, /v1/decide, /v1/events, in-actor time and memory per profile."""
    from bench.run import run

    run(
        read_config(config),
        seconds=seconds,
        connections=connections,
        profiles=profiles,
        say=typer.echo,
    )
