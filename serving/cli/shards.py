"""`nextbest shards`: which shard owns which slots, and moving them while traffic flows
(scale to N shards, move a range by hand, rebalance). A move runs in the supervisor;
the command follows its progress until it is done (or returns at once with --no-wait)."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from decisioning.config import Config
from serving.cli import client, render
from serving.cli.common import DEFAULT_CONFIG, ConfigOpt, UrlOpt, fail, read_config

__all__ = ["follow", "shards_app"]

shards_app = typer.Typer(
    help="Slots and shards: list them; scale, move or rebalance while traffic flows.",
    invoke_without_command=True,
)
NoWait = Annotated[bool, typer.Option("--no-wait", help="Start the move and return.")]


@shards_app.callback()
def shards(ctx: typer.Context, config: ConfigOpt = DEFAULT_CONFIG, url: UrlOpt = None) -> None:
    """Each shard's slot ranges, slot count, profiles and node; the slot map's epoch."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = read_config(config)
    out = client.call(cfg, url, "GET", "/v1/shards", admin=True, timeout=10, failed="failed")
    typer.echo(render.shards_table(out))


@shards_app.command("scale")
def scale(
    n: Annotated[int, typer.Argument(help="Shards to run.", min=1)],
    config: ConfigOpt = DEFAULT_CONFIG,
    url: UrlOpt = None,
    no_wait: NoWait = False,
) -> None:
    """Add or remove shards; slots move to balance (a shard removed gives its slots away
    first, then stops)."""
    cfg = read_config(config)
    _start(cfg, url, "/v1/shards/scale", {"shards": n}, no_wait)


@shards_app.command("move")
def move(
    slots: Annotated[str, typer.Option(help="A slot range, e.g. 0-1023 (inclusive).")],
    to: Annotated[int, typer.Option(help="The shard that will own them.", min=0)],
    config: ConfigOpt = DEFAULT_CONFIG,
    url: UrlOpt = None,
    no_wait: NoWait = False,
) -> None:
    """Move a range of slots (and every customer in them) to shard `--to`."""
    first, sep, last = slots.partition("-")
    try:
        lo, hi = int(first), int(last if sep else first)
    except ValueError:
        raise fail(f"--slots {slots!r}: expected a range like 0-1023") from None
    cfg = read_config(config)
    _start(cfg, url, "/v1/shards/move", {"first": lo, "last": hi, "to": to}, no_wait)


@shards_app.command("rebalance")
def rebalance(
    config: ConfigOpt = DEFAULT_CONFIG, url: UrlOpt = None, no_wait: NoWait = False
) -> None:
    """Even out the slots over the shards that run (e.g. onto a new node's shards)."""
    _start(read_config(config), url, "/v1/shards/rebalance", {}, no_wait)


def _start(cfg: Config, url: str | None, path: str, body: dict[str, Any], no_wait: bool) -> None:
    try:
        r = client.request(cfg, url, "POST", path, admin=True, timeout=30, json=body)
    except client.Unreachable as e:
        raise fail(str(e)) from None
    if r.status_code != 202:
        err = (
            r.json().get("error", {})
            if r.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        raise fail(
            f"refused ({r.status_code} {err.get('code', '')}): {err.get('message', r.text[:300])}"
        )
    if no_wait:
        typer.echo(render.move_line(r.json()))
        return
    final = follow(lambda: _moving(cfg, url))
    if final["state"] == "failed":
        raise typer.Exit(1)


def _moving(cfg: Config, url: str | None) -> dict[str, Any]:
    out = client.call(cfg, url, "GET", "/v1/shards", admin=True, timeout=10, failed="failed")
    moving: dict[str, Any] = out["moving"]
    return moving


def follow(poll: Any, every: float = 0.5) -> dict[str, Any]:
    """Show a move's progress until it ends (one line, redrawn on a terminal; a line per
    second otherwise); returns its last progress."""
    tty = sys.stdout.isatty()
    last_print = 0.0
    while True:
        p = poll()
        line = render.move_line(p)
        if p["state"] != "running":
            typer.echo(("\r" if tty else "") + line)
            return p
        now = time.monotonic()
        if tty:
            typer.echo("\r" + line, nl=False)
        elif now - last_print >= 1.0:
            typer.echo(line)
            last_print = now
        time.sleep(every)
