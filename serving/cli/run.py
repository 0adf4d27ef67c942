"""`nextbest serve` and `nextbest demo`: run the server (Ray, the shards, the Serve app),
with the demo model, data and API key when asked for them."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from decisioning.config import SCOPES, ApiKeySpec, Config
from decisioning.stores.registry import Registry
from decisioning.stores.slotmap import SlotMapError
from serving.cli import client, render
from serving.cli.common import DEFAULT_CONFIG, ConfigOpt, UrlOpt, fail, read_config

__all__ = ["demo", "ensure_demo_model", "load_demo_events", "serve", "with_keys"]


def with_keys(config: Config, demo: bool) -> tuple[Config, str | None]:
    """The config to serve with, and the demo key when one was made or reused.

    Auth on and no keys: `--demo` makes an all-scopes key (kept in the data dir, 0600);
    otherwise the server refuses to start. Auth off: a loud warning.
    """
    if not config.auth.enabled:
        typer.secho(
            "WARNING: authentication is OFF (auth.enabled: false). Anyone who reaches "
            f"{config.server.host}:{config.server.port} can read, change and erase every "
            "profile. Only for a closed network.",
            fg="red",
            bold=True,
            err=True,
        )
        return config, None
    if config.auth.keys:
        return config, None
    path = client.demo_key_path(config)
    if not demo or path is None:
        raise fail(
            "auth is on and no API keys are configured: make one with `nextbest keys new "
            "--name <client> --scope decide --scope events:write` and add it under auth.keys "
            "(or NEXTBEST_AUTH_KEYS), or set auth.enabled: false on a closed network"
        )
    from serving.auth import new_key, sha256_hex

    if os.path.exists(path):
        with open(path) as f:
            key = f.read().strip()
    else:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        key = new_key()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
    spec = ApiKeySpec(name="demo", sha256=sha256_hex(key), scopes=list(SCOPES))
    return config.model_copy(update={"auth": config.auth.model_copy(update={"keys": [spec]})}), key


def ensure_demo_model(config: Config, customers: int = 3000) -> None:
    """Train and mark deployed the demo model, unless a model is deployed already."""
    from training.demo import generate
    from training.train import train

    registry = Registry(config.server.data_dir)
    if any(registry.deployed(n) is not None for n in registry.names()):
        return
    typer.echo(f"first run: generating demo data for {customers} customers and training…")
    data = generate(config, customers=customers)
    result = train(
        data.training, config, name="propensity", progress=lambda m: typer.echo("  " + m)
    )
    registry.set_deployed(result.manifest.name, result.manifest.version)


def load_demo_events(url: str, config: Config, customers: int) -> int:
    """Send the demo event streams of customers c-0..c-<customers-1> to a running server."""
    from training.demo import event_batches, generate

    data = generate(config, customers=customers, offers=0, now=time.time())
    sent = 0
    with httpx.Client(base_url=url, timeout=60, **client.client_opts(config)) as c:
        for batch in event_batches(data.events):
            r = c.post("/v1/events", json=batch)
            if r.status_code != 200:
                raise fail(f"loading demo events failed ({r.status_code}): {r.text[:500]}")
            sent += len(batch)
    return sent


def _greet(cfg: Config, url: str, demo_key: str | None) -> None:
    """Where the server listens, where its admin API is, and a first call to try."""
    typer.secho(f"nextbest is listening on {url}  (OpenAPI: {url}/docs)", fg="green")
    if cfg.server.admin_port is not None:
        typer.echo(f"admin API (models, status) on {client.url(cfg, None, admin=True)} only")
    elif not cfg.auth.admin_api:
        typer.echo("admin API off (auth.admin_api: false)")
    if demo_key:
        typer.echo(f"demo API key (every scope; kept in {client.demo_key_path(cfg)}): {demo_key}")
    key = demo_key or "$NEXTBEST_API_KEY" if cfg.auth.enabled else None
    auth = f" -H 'authorization: Bearer {key}'" if key else ""
    typer.echo(
        f"  curl -s {url}/v1/decide{auth} -H 'content-type: application/json' "
        '-d \'{"customer_id": "c-42", "channel": "web"}\''
    )
    typer.echo("Ctrl-C stops it.")


def _demo_profiles(cfg: Config, url: str) -> None:
    """The demo customers' events, unless the data dir brought their profiles back."""
    known = httpx.get(f"{url}/v1/profiles/c-0", timeout=10, **client.client_opts(cfg))
    if known.json().get("known"):
        typer.echo("demo profiles c-0 … c-199 restored from the data dir")
    else:
        n = load_demo_events(url, cfg, customers=200)
        typer.echo(f"loaded {n} demo events for customers c-0 … c-199")


def serve(
    config: ConfigOpt = DEFAULT_CONFIG,
    demo: Annotated[
        bool, typer.Option(help="Train the demo model on first run; load demo profiles.")
    ] = False,
    num_cpus: Annotated[int, typer.Option(help="CPUs for a local Ray.")] = 2,
) -> None:
    """Start Ray (local unless RAY_ADDRESS is set), the shards and the Serve app."""
    from serving import server

    cfg, demo_key = with_keys(read_config(config), demo)
    if demo:
        ensure_demo_model(cfg)
    started = server.start_ray(cfg, num_cpus=num_cpus)
    stopping = False

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # both, explicitly: a process started in the background inherits SIGINT as ignored
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        typer.echo(
            f"starting {cfg.server.shards} shards and the Serve app… (a deployed model not yet "
            "compiled for this CPU is compiled first: seconds per model)"
        )
        try:
            url = server.start(cfg, moving=_moving_line())
        except (server.PortInUse, SlotMapError) as e:
            typer.secho(f"nextbest cannot start: {e}", fg="red", err=True)
            raise typer.Exit(1) from None
        if demo:
            _demo_profiles(cfg, url)
        _greet(cfg, url, demo_key)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stopping = True
    finally:
        typer.echo("stopping…" if stopping else "stopping after an error…")
        try:
            server.stop(cfg)
        finally:
            if started:
                import ray

                ray.shutdown()
        typer.echo("stopped.")


def _moving_line() -> Callable[[dict[str, Any]], None]:
    """Show the progress of slots moved at start (a data dir of another shard count)."""
    tty = sys.stdout.isatty()

    def show(progress: dict[str, Any]) -> None:
        line = render.move_line(progress)
        done = progress["state"] != "running"
        typer.echo(("\r" if tty else "") + line, nl=done or not tty)

    return show


def demo(
    config: ConfigOpt = DEFAULT_CONFIG,
    customers: Annotated[int, typer.Option(help="Customers to simulate.")] = 3000,
    out: Annotated[Path, typer.Option(help="Where to write the tables.")] = Path("data/demo"),
    load: UrlOpt = None,
) -> None:
    """Generate the synthetic bank data set: training table and event streams."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from training.demo import generate

    cfg = read_config(config)
    data = generate(cfg, customers=customers)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(data.training, out / "training.parquet")
    events = pa.table(
        {
            "customer_id": [e.customer_id for e in data.events],
            "type": [e.type for e in data.events],
            "ts": [e.ts for e in data.events],
            "properties": [json.dumps(dict(e.properties)) for e in data.events],
        }
    )
    pq.write_table(events, out / "events.parquet")
    typer.echo(
        f"wrote {data.training.num_rows} training rows and {events.num_rows} events to {out}/"
    )
    if load:
        typer.echo(f"sent {load_demo_events(load, cfg, customers)} events to {load}")
