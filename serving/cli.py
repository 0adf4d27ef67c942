"""The `nextbest` command line: serve, train, models, demo, status, bench."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from decisioning.config import SCOPES, ApiKeySpec, Config, Secrets
from decisioning.config.loader import load_config
from decisioning.errors import ConfigError, NextbestError
from decisioning.policy.scoring import read_model_dir
from decisioning.stores.registry import Registry

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="nextbest: real-time next-best-action server on Ray.",
)
models_app = typer.Typer(
    no_args_is_help=True, help="Model versions: list, deploy, promote, roll back, split, stats."
)
app.add_typer(models_app, name="models")

OUTCOME_NAMES = ("impression", "click", "accept", "reject", "convert")
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Config file (YAML).")]
DEFAULT_CONFIG = Path("examples/nextbest.yaml")
UrlOpt = Annotated[str | None, typer.Option(help="Server URL (default: from the config).")]


def _config(path: Path) -> Config:
    """The config file, with the catalog applied at runtime if there is one (training,
    registering and evaluating must see the actions the shards serve)."""
    from decisioning.stores.catalogs import serving_config

    try:
        return serving_config(load_config(path, os.environ))
    except ConfigError as e:
        typer.secho(str(e), fg="red", err=True)
        raise typer.Exit(2) from None


def _url(config: Config, url: str | None, admin: bool = False) -> str:
    """The URL the CLI calls: the channels' port, or for admin calls the admin port
    when there is one; a wildcard bind address is called on localhost."""
    s = config.server
    scheme = "https" if s.tls_certfile else "http"
    host, port = (s.admin_host, s.admin_port) if admin and s.admin_port else (s.host, s.port)
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return url or f"{scheme}://{host}:{port}"


def _client_opts(config: Config) -> dict[str, Any]:
    """httpx options of the CLI's own calls: its API key, and with TLS the configured
    certificate as the one to trust (a self-signed one works)."""
    opts: dict[str, Any] = {"headers": _headers(config)}
    if config.server.tls_certfile:
        opts["verify"] = ssl.create_default_context(cafile=config.server.tls_certfile)
    return opts


def _fail(message: str) -> typer.Exit:
    typer.secho(message, fg="red", err=True)
    return typer.Exit(1)


def _demo_key_path(config: Config) -> str | None:
    """Where `serve --demo` keeps its all-scopes demo key (a local data dir only)."""
    root = config.server.data_dir.removeprefix("file://")
    return None if "://" in root else os.path.join(root, "demo-api-key")


def _headers(config: Config) -> dict[str, str]:
    """The API key of the CLI's own calls: NEXTBEST_API_KEY, else the demo key if any."""
    key = os.environ.get("NEXTBEST_API_KEY")
    path = _demo_key_path(config)
    if not key and path and os.path.exists(path):
        with open(path) as f:
            key = f.read().strip()
    return {"authorization": f"Bearer {key}"} if key else {}


def _with_keys(config: Config, demo: bool) -> tuple[Config, str | None]:
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
    path = _demo_key_path(config)
    if not demo or path is None:
        raise _fail(
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
    with httpx.Client(base_url=url, timeout=60, **_client_opts(config)) as client:
        for batch in event_batches(data.events):
            r = client.post("/v1/events", json=batch)
            if r.status_code != 200:
                raise _fail(f"loading demo events failed ({r.status_code}): {r.text[:500]}")
            sent += len(batch)
    return sent


@app.command()
def serve(
    config: ConfigOpt = DEFAULT_CONFIG,
    demo: Annotated[
        bool, typer.Option(help="Train the demo model on first run; load demo profiles.")
    ] = False,
    num_cpus: Annotated[int, typer.Option(help="CPUs for a local Ray.")] = 2,
) -> None:
    """Start Ray (local unless RAY_ADDRESS is set), the shards and the Serve app."""
    from serving import server

    cfg, demo_key = _with_keys(_config(config), demo)
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
            url = server.start(cfg)
        except server.PortInUse as e:
            typer.secho(f"nextbest cannot start: {e}", fg="red", err=True)
            raise typer.Exit(1) from None
        if demo:
            known = httpx.get(f"{url}/v1/profiles/c-0", timeout=10, **_client_opts(cfg))
            if known.json().get("known"):
                typer.echo("demo profiles c-0 … c-199 restored from the data dir")
            else:
                n = load_demo_events(url, cfg, customers=200)
                typer.echo(f"loaded {n} demo events for customers c-0 … c-199")
        typer.secho(f"nextbest is listening on {url}  (OpenAPI: {url}/docs)", fg="green")
        if cfg.server.admin_port is not None:
            typer.echo(f"admin API (models, status) on {_url(cfg, None, admin=True)} only")
        elif not cfg.auth.admin_api:
            typer.echo("admin API off (auth.admin_api: false)")
        if demo_key:
            typer.echo(f"demo API key (every scope; kept in {_demo_key_path(cfg)}): {demo_key}")
        key = demo_key or "$NEXTBEST_API_KEY" if cfg.auth.enabled else None
        auth = f" -H 'authorization: Bearer {key}'" if key else ""
        typer.echo(
            f"  curl -s {url}/v1/decide{auth} -H 'content-type: application/json' "
            '-d \'{"customer_id": "c-42", "channel": "web"}\''
        )
        typer.echo("Ctrl-C stops it.")
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


@app.command("train")
def train_cmd(
    table: Annotated[
        Path | None, typer.Argument(help="Parquet or CSV table: label + features.")
    ] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    name: Annotated[
        str | None,
        typer.Option(help="Model name (default: propensity; from logs: every model logged)."),
    ] = None,
    label: Annotated[str, typer.Option(help="Label column (0/1).")] = "label",
    rounds: Annotated[int, typer.Option(help="Boosting rounds.")] = 200,
    out: Annotated[Path | None, typer.Option(help="Write here instead of the registry.")] = None,
    from_logs: Annotated[
        bool, typer.Option("--from-logs", help="Train on the decision and outcome logs.")
    ] = False,
    logs: Annotated[str | None, typer.Option(help="Logs dir/URI (default: the config's).")] = None,
    positive: Annotated[
        list[str] | None, typer.Option(help="Outcomes that count as positive (repeat).")
    ] = None,
    window: Annotated[str, typer.Option(help="Attribution window, e.g. 30m, 24h, 7d.")] = "7d",
    include_open_windows: Annotated[
        bool,
        typer.Option(help="Also decisions whose window is still open (labels not final)."),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(help="Train with Ray Train on N workers (default on a cluster: 2)."),
    ] = None,
) -> None:
    """Train a LightGBM model version from a table, or from the logs (--from-logs), and
    write it with its manifest and an HTML report."""
    cfg = _config(config)
    if (table is None) == (not from_logs):
        raise _fail("give a TABLE, or --from-logs (not both)")
    if workers is None and os.environ.get("RAY_ADDRESS"):
        workers = 2
    with _ray_for_training(workers):
        _train(
            cfg,
            table,
            name,
            label,
            rounds,
            out,
            from_logs,
            logs,
            positive,
            window,
            workers,
            include_open_windows,
        )


@contextlib.contextmanager
def _ray_for_training(workers: int | None) -> Iterator[None]:
    """Ray for Ray Train: the cluster at RAY_ADDRESS, or a small local one, stopped after."""
    if not workers:
        yield
        return
    import ray

    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])  # workers' progress shows here
    else:
        # a CPU per worker, and some for Ray Data's reads beside them
        ray.init(num_cpus=workers + 2, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()


def _train(
    cfg: Config,
    table: Path | None,
    name: str | None,
    label: str,
    rounds: int,
    out: Path | None,
    from_logs: bool,
    logs: str | None,
    positive: list[str] | None,
    window: str,
    workers: int | None,
    include_open: bool = False,
) -> None:
    from training.train import read_table, train

    try:
        if from_logs:
            from decisioning.stores.decision_log import logs_root
            from training.from_logs import logged_models, parse_window, table_from_logs

            source = logs or logs_root(cfg.server.data_dir, cfg.logs)
            bad = [p for p in positive or () if p not in OUTCOME_NAMES]
            if bad:
                raise _fail(f"not outcomes: {', '.join(bad)} (known: {', '.join(OUTCOME_NAMES)})")
            names = [name] if name else logged_models(source)
            if out is not None and len(names) > 1:
                raise _fail(f"--out takes one model; the logs hold {', '.join(names)}: --name")
            for model in names:  # one model per model name
                got = table_from_logs(
                    source,
                    cfg,
                    model,
                    positives=positive or ("accept", "convert"),
                    window_s=parse_window(window),
                    progress=typer.echo,
                    include_open=include_open,
                )
                result = train(
                    got.table,
                    cfg,
                    name=model,
                    features=got.features,
                    rounds=rounds,
                    out_dir=str(out) if out else None,
                    training_info=got.info,
                    progress=typer.echo,
                    workers=workers,
                )
                typer.echo(f"deploy it with: nextbest models deploy {result.path}")
            return
        else:
            assert table is not None
            result = train(
                read_table(table),
                cfg,
                name=name or "propensity",
                label=label,
                rounds=rounds,
                out_dir=str(out) if out else None,
                progress=typer.echo,
                workers=workers,
            )
    except NextbestError as e:
        raise _fail(f"train: {e}") from None
    typer.echo(f"deploy it with: nextbest models deploy {result.path}")


@app.command("retrain")
def retrain_cmd(
    config: ConfigOpt = DEFAULT_CONFIG,
    name: Annotated[str, typer.Option(help="Model name.")] = "propensity",
    every: Annotated[str, typer.Option(help="Time between rounds, e.g. 1h.")] = "1h",
    lookback: Annotated[str, typer.Option(help="Logs to train on, e.g. 30d.")] = "30d",
    margin: Annotated[float, typer.Option(help="AUC the new one must gain to win.")] = 0.005,
    rounds: Annotated[int, typer.Option(help="Boosting rounds.")] = 200,
    window: Annotated[str, typer.Option(help="Attribution window.")] = "7d",
    once: Annotated[bool, typer.Option("--once", help="One round, then exit.")] = False,
    logs: Annotated[str | None, typer.Option(help="Logs dir/URI (default: the config's).")] = None,
    url: UrlOpt = None,
) -> None:
    """Every EVERY: train on the last LOOKBACK of logs, register the version, and promote
    it on the running server only if it beats the champion by MARGIN (held-out AUC)."""
    from decisioning.stores.decision_log import logs_root
    from training.from_logs import parse_window
    from training.retrain import retrain_once

    cfg = _config(config)
    try:
        period, back, win = parse_window(every), parse_window(lookback), parse_window(window)
    except NextbestError as e:
        raise _fail(str(e)) from None

    def promote(model: str, version: int) -> None:
        _said(_admin_post(cfg, url, f"/v1/models/{model}/promote", {"version": version}))

    source = logs or logs_root(cfg.server.data_dir, cfg.logs)
    while True:
        started = time.monotonic()
        try:
            retrain_once(
                cfg,
                source,
                name,
                back,
                margin,
                promote,
                rounds,
                window_s=win,
                progress=typer.echo,
            )
        except NextbestError as e:
            if once:
                raise _fail(f"retrain: {e}") from None
            typer.secho(f"retrain round failed, next in {every}: {e}", fg="red", err=True)
        except typer.Exit:  # the server refused or was not reachable (already said)
            if once:
                raise
            typer.secho(f"promotion failed, next round in {every}", fg="red", err=True)
        if once:
            return
        time.sleep(max(0.0, period - (time.monotonic() - started)))


@app.command("simulate")
def simulate_cmd(
    catalog: Annotated[Path, typer.Option(help="The candidate catalog (or a config file).")],
    events: Annotated[
        Path,
        typer.Option(
            help="Events (Parquet: customer_id, type, ts, properties as JSON), e.g. from `demo`."
        ),
    ],
    requests: Annotated[
        Path | None,
        typer.Option(
            help="Decision requests (Parquet: customer_id, channel, ts, placement, "
            "context); default: those in the decision logs."
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Ray tasks (RAY_ADDRESS: a cluster).")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Replay events and decision requests through the current catalog and a candidate
    one: the funnel per stage, actions shown per channel, expected value per decision."""
    import pyarrow.parquet as pq
    import yaml

    from decisioning.stores.catalogs import with_catalog
    from decisioning.stores.decision_log import logs_root
    from training.simulate import requests_from_logs, simulate

    cfg = _config(config)
    try:
        data = yaml.safe_load(catalog.read_text())
        sections = {k: v for k, v in (data or {}).items() if k in ("actions", "decisioning")}
        candidate = with_catalog(cfg, sections, str(catalog))
        ev = pq.read_table(events)
        req = (
            pq.read_table(requests)
            if requests
            else requests_from_logs(logs_root(cfg.server.data_dir, cfg.logs))
        )
    except (OSError, yaml.YAMLError) as e:
        raise _fail(f"simulate: {e}") from None
    except NextbestError as e:
        raise _fail(f"simulate: {e}") from None
    with _ray_for_training(workers):
        cur, cand = simulate(cfg, candidate, ev, req, workers, progress=typer.echo)
    if as_json:
        typer.echo(json.dumps({"current": cur.to_dict(), "candidate": cand.to_dict()}, indent=2))
        return
    a, b = cur.to_dict(), cand.to_dict()
    typer.echo(f"{'':<34} {'current':>12} {'candidate':>12}")
    typer.echo(f"{'decisions':<34} {a['decisions']:>12} {b['decisions']:>12}")
    typer.echo(f"{'nothing shown':<34} {a['nothing_shown']:>12} {b['nothing_shown']:>12}")
    ev_a, ev_b = a["expected_value_per_decision"], b["expected_value_per_decision"]
    typer.echo(f"{'expected value per decision':<34} {ev_a:>12.2f} {ev_b:>12.2f}")
    typer.echo("candidates removed, by stage:")
    for stage in sorted(set(a["removed_by_stage"]) | set(b["removed_by_stage"])):
        x, y = a["removed_by_stage"].get(stage, 0), b["removed_by_stage"].get(stage, 0)
        typer.echo(f"  {stage:<32} {x:>12} {y:>12}")
    typer.echo("shown, by channel/action:")
    for key in sorted(set(a["shown"]) | set(b["shown"])):
        typer.echo(f"  {key:<32} {a['shown'].get(key, 0):>12} {b['shown'].get(key, 0):>12}")


@app.command("evaluate")
def evaluate_cmd(
    model: Annotated[str, typer.Option(help="The candidate, name@version.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    logs: Annotated[str | None, typer.Option(help="Logs dir/URI (default: the config's).")] = None,
    positive: Annotated[
        list[str] | None, typer.Option(help="Outcomes that count as reward (repeat).")
    ] = None,
    window: Annotated[str, typer.Option(help="Attribution window, e.g. 30m, 24h, 7d.")] = "7d",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Estimate from the logs how a model version would have done against what ran
    (IPS, self-normalised IPS, doubly robust; 95% bootstrap intervals)."""
    from decisioning.stores.decision_log import logs_root
    from training.from_logs import parse_window
    from training.ope import evaluate

    cfg = _config(config)
    bad = [p for p in positive or () if p not in OUTCOME_NAMES]
    if bad:
        raise _fail(f"not outcomes: {', '.join(bad)} (known: {', '.join(OUTCOME_NAMES)})")
    try:
        e = evaluate(
            logs or logs_root(cfg.server.data_dir, cfg.logs),
            cfg,
            model,
            positive or ("accept", "convert"),
            parse_window(window),
            progress=lambda m: typer.echo(m, err=True),
        )
    except NextbestError as err:
        raise _fail(f"evaluate: {err}") from None
    if as_json:
        typer.echo(json.dumps(e.to_dict(), indent=2))
        return
    typer.echo(f"{e.n} decisions; what ran earned {e.logged:.4f} per decision")
    typer.echo(f"{model} agrees with what ran on {e.support:.1%} of them")
    for label, (v, lo, hi) in (("IPS", e.ips), ("SNIPS", e.snips), ("DR", e.dr)):
        typer.echo(f"  {label:<6} {v:.4f}   95% interval {lo:.4f} … {hi:.4f}")
    if e.support < 0.05:
        typer.echo(
            "  few decisions support this model: turn on exploration "
            "(decisioning.exploration) to evaluate models that differ from what runs"
        )


@models_app.command("deploy")
def models_deploy(
    path: Annotated[Path, typer.Argument(help="Model version directory.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    url: UrlOpt = None,
) -> None:
    """Load a model version into every running shard, without a restart."""
    cfg = _config(config)
    try:
        bundle = read_model_dir(path)
    except NextbestError as e:
        raise _fail(f"refused: {e}") from None
    body = {"manifest": bundle.manifest.to_dict(), "model_text": bundle.model_text}
    typer.echo(f"deploying {bundle.manifest.ref} (compiling to native code takes seconds)…")
    try:
        r = httpx.post(
            f"{_url(cfg, url, admin=True)}/v1/models/deploy",
            json=body,
            timeout=120,
            **_client_opts(cfg),
        )
    except httpx.HTTPError as e:
        raise _fail(f"cannot reach the server at {_url(cfg, url, admin=True)}: {e}") from None
    if r.status_code != 200:
        raise _fail(f"refused ({r.status_code}): {r.json().get('error', {}).get('message')}")
    typer.echo(f"deployed {r.json()['deployed']} to {r.json()['shards']} shards")


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

    cfg = _config(config)
    try:
        table = None if check_table is None else read_table(check_table)
        m = register_external(model_file, cfg, name, feature_map, table)
    except NextbestError as e:
        raise _fail(str(e)) from None
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

    cfg = _config(config)
    if cfg.auth.model_key_env is None:
        raise _fail("auth.model_key_env is not set: there is no signing key to use")
    try:
        bundle = read_model_dir(path)
        key = Secrets.resolve(cfg, os.environ).model_key()
    except NextbestError as e:
        raise _fail(f"refused: {e}") from None
    assert key is not None
    signed = bundle.__class__(sign(bundle.manifest, key), bundle.model_text)
    write_model_dir(path, signed)
    typer.echo(f"signed {signed.manifest.ref} ({path})")


@models_app.command("list")
def models_list(config: ConfigOpt = DEFAULT_CONFIG, url: UrlOpt = None) -> None:
    """Model versions in the registry, and what each running shard serves."""
    cfg = _config(config)
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
            typer.echo(f"{m.ref:<20} {alias:<16} auc={m.metrics.get('auc')}  {m.created_at}")
    try:
        r = httpx.get(f"{_url(cfg, url, admin=True)}/v1/models", timeout=10, **_client_opts(cfg))
        typer.echo("serving: " + json.dumps(r.json()["shards"]))
    except httpx.HTTPError:
        typer.echo("serving: (server not reachable)")


def _call(
    cfg: Config,
    url: str | None,
    method: str,
    path: str,
    *,
    admin: bool = False,
    timeout: float = 30,
    headers: dict[str, str] | None = None,
    **body: Any,
) -> Any:
    """One CLI call to the server (`body`: httpx's json= or content=); its JSON answer,
    or exit 1 saying why it was refused or could not be made."""
    base = _url(cfg, url, admin=admin)
    opts = _client_opts(cfg)
    opts["headers"] = {**opts["headers"], **(headers or {})}
    try:
        r = httpx.request(method, f"{base}{path}", timeout=timeout, **opts, **body)
    except httpx.HTTPError as e:
        raise _fail(f"cannot reach the server at {base}: {e}") from None
    if r.status_code != 200:
        raise _fail(f"refused ({r.status_code}): {r.json().get('error', {}).get('message')}")
    return r.json()


def _admin_post(cfg: Config, url: str | None, path: str, body: dict[str, Any]) -> Any:
    return _call(cfg, url, "POST", path, admin=True, timeout=300, json=body)


def _said(result: dict[str, Any]) -> None:
    name = result["model"]
    line = f"{name}: champion {name}@{result['champion']}"
    if result["challenger"] is not None:
        how = "in shadow" if result["shadow"] else f"for {result['share']:.0%} of customers"
        line += f", challenger {name}@{result['challenger']} {how}"
    typer.echo(line + f" (on {result['shards']} shards)")


ModelName = Annotated[str, typer.Argument(help="Model name, e.g. propensity.")]


@models_app.command("promote")
def models_promote(
    name: ModelName,
    version: Annotated[int | None, typer.Option(help="Default: the challenger.")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    url: UrlOpt = None,
) -> None:
    """Make a version the champion on every shard at once (the old one can be rolled
    back to)."""
    cfg = _config(config)
    _said(_admin_post(cfg, url, f"/v1/models/{name}/promote", {"version": version}))


@models_app.command("rollback")
def models_rollback(
    name: ModelName, config: ConfigOpt = DEFAULT_CONFIG, url: UrlOpt = None
) -> None:
    """Serve the champion before this one again, on every shard at once."""
    cfg = _config(config)
    _said(_admin_post(cfg, url, f"/v1/models/{name}/rollback", {}))


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
        raise _fail("give --version N to start a challenger, or --end to end it")
    cfg = _config(config)
    body = {"version": version, "share": share, "shadow": shadow}
    _said(_admin_post(cfg, url, f"/v1/models/{name}/split", body))


@models_app.command("stats")
def models_stats(config: ConfigOpt = DEFAULT_CONFIG, url: UrlOpt = None) -> None:
    """Live metrics per model version (since the shards started): decisions,
    impressions, accepts, accept rate."""
    cfg = _config(config)
    base = _url(cfg, url, admin=True)
    try:
        r = httpx.get(f"{base}/v1/models/stats", timeout=10, **_client_opts(cfg))
    except httpx.HTTPError as e:
        raise _fail(f"cannot reach the server at {base}: {e}") from None
    if r.status_code != 200:
        raise _fail(f"stats failed ({r.status_code}): {r.text[:300]}")
    head = f"{'version':<20} {'alias':<11} {'decisions':>10} {'impressions':>12} "
    typer.echo(head + f"{'accepts':>8} {'accept rate':>12}")
    for model in r.json()["models"].values():
        for v in model["versions"]:
            rate = "-" if v["accept_rate"] is None else f"{v['accept_rate']:.2%}"
            typer.echo(
                f"{v['version']:<20} {v['alias'] or '-':<11} {v['decisions']:>10} "
                f"{v['impression']:>12} {v['accept']:>8} {rate:>12}"
            )


@app.command()
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

    cfg = _config(config)
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


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def status_table(shards: list[dict[str, Any]]) -> str:
    """One line per shard: ready, generation, customers, WAL, last snapshot, counters."""
    head = ("shard", "ready", "gen", "restarts", "customers", "wal", "snapshot", "recovered",
            "scorer", "events", "decisions", "dupes")  # fmt: skip
    rows = [head]
    for s in shards:
        if s.get("ready") is False:  # not answering: restarting, recovering or gone
            rows.append((str(s["shard"]), "no", *("-" for _ in head[2:])))
            continue
        rec = s.get("recovery") or {}
        ready = "FENCED" if s.get("fenced") else "yes"
        snap = f"{s['last_snapshot_s_ago']:.0f}s ago" if s.get("last_snapshot") else "none yet"
        snap += " (writing)" if s.get("snapshotting") else ""
        rows.append(
            (
                str(s["shard"]),
                ready,
                str(rec.get("generation", "-")),
                str(rec.get("restarts", "-")),
                f"{s['customers']:,}",
                _mb(s["wal_bytes"]) if s.get("durable") else "off",
                snap if s.get("durable") else "-",
                f"{rec['snapshot_profiles']:,}+{rec['wal_records']:,} in {rec['seconds']}s"
                if rec
                else "-",
                ",".join(sorted(set(s.get("scorers", {}).values()))) or "-",
                f"{s.get('events', 0):,}",
                f"{s.get('decisions', 0):,}",
                f"{s.get('duplicates', 0):,}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


@app.command()
def status(
    config: ConfigOpt = DEFAULT_CONFIG,
    url: UrlOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Every field, one JSON per shard.")
    ] = False,
) -> None:
    """Each shard: ready, generation (starts), customers, WAL size, last snapshot, last
    recovery, scorer, counters."""
    cfg = _config(config)
    try:
        r = httpx.get(f"{_url(cfg, url, admin=True)}/v1/status", timeout=10, **_client_opts(cfg))
    except httpx.HTTPError as e:
        raise _fail(f"cannot reach the server at {_url(cfg, url, admin=True)}: {e}") from None
    if r.status_code != 200:
        raise _fail(f"status failed ({r.status_code}): {r.text[:300]}")
    shards = r.json()["shards"]
    if as_json:
        for s in shards:
            typer.echo(json.dumps(s))
    else:
        typer.echo(status_table(shards))


catalog_app = typer.Typer(
    help="The action catalog: show, apply at runtime, roll back.", no_args_is_help=True
)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("apply")
def catalog_apply(
    path: Annotated[Path, typer.Argument(help="YAML (or JSON) with actions and decisioning.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    url: UrlOpt = None,
) -> None:
    """Validate, version and swap the catalog on every shard at once (the previous one
    stays available: `nextbest catalog rollback`)."""
    import yaml

    cfg = _config(config)
    try:
        catalog = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise _fail(f"cannot read {path}: {e}") from None
    if isinstance(catalog, dict):  # a whole config file: take its catalog sections
        from decisioning.stores.catalogs import CATALOG_KEYS

        catalog = {k: v for k, v in catalog.items() if k in CATALOG_KEYS}
    out = _call(cfg, url, "PUT", "/v1/catalog", admin=True, timeout=120, json=catalog)
    if not out["changed"]:
        typer.echo(f"catalog {out['version']} is already served")
    else:
        typer.echo(f"catalog {out['version']} served by {out['shards']} shards")


@catalog_app.command("rollback")
def catalog_rollback(config: ConfigOpt = DEFAULT_CONFIG, url: UrlOpt = None) -> None:
    """Serve the catalog before the current one again, on every shard at once."""
    cfg = _config(config)
    out = _admin_post(cfg, url, "/v1/catalog/rollback", {})
    typer.echo(f"catalog {out['version']} served again by {out['shards']} shards")


@catalog_app.command("show")
def catalog_show(config: ConfigOpt = DEFAULT_CONFIG, url: UrlOpt = None) -> None:
    """The catalog the running shards serve, as JSON."""
    catalog = _call(_config(config), url, "GET", "/v1/catalog", admin=True)
    typer.echo(json.dumps(catalog, indent=2))


context_app = typer.Typer(
    help="External context tables: load a version, show what the shards serve.",
    no_args_is_help=True,
)
app.add_typer(context_app, name="context")


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

    cfg = _config(config)
    try:
        if path.suffix.lower() == ".csv":  # sent as Parquet: types and all
            sink = pa.BufferOutputStream()
            pq.write_table(pacsv.read_csv(str(path)), sink)
            body = sink.getvalue().to_pybytes()
        else:
            body = path.read_bytes()
    except (OSError, pa.ArrowException) as e:
        raise _fail(f"cannot read {path}: {e}") from None
    parquet = {"content-type": "application/vnd.apache.parquet"}
    path_ = f"/v1/context/{table}"
    out = _call(cfg, url, "PUT", path_, timeout=300, headers=parquet, content=body)
    typer.echo(f"{table} {out['version']}: {out['rows']} rows served by {out['shards']} shards")


@context_app.command("show")
def context_show(config: ConfigOpt = DEFAULT_CONFIG, url: UrlOpt = None) -> None:
    """Each context table and the version each shard serves, as JSON."""
    typer.echo(json.dumps(_call(_config(config), url, "GET", "/v1/context"), indent=2))


keys_app = typer.Typer(help="API keys: make one for a client.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Option(help="Who gets the key (a client or channel).")],
    scope: Annotated[list[str], typer.Option(help=f"Repeat for each scope: {', '.join(SCOPES)}.")],
) -> None:
    """Print a new random API key once, and the config entry (its sha256) to add."""
    from serving.auth import new_key, sha256_hex

    bad = [s for s in scope if s not in SCOPES]
    if bad:
        raise _fail(f"unknown scope(s) {', '.join(bad)}; known: {', '.join(SCOPES)}")
    try:
        ApiKeySpec(name=name, sha256="0" * 64, scopes=scope)  # type: ignore[arg-type]
    except ValueError as e:
        raise _fail(f"invalid key name {name!r}: {e}") from None
    key = new_key()
    typer.echo(f"API key for {name} (shown once; give it to the client, store it nowhere else):")
    typer.echo(f"  {key}")
    typer.echo("add to the config under auth.keys:")
    entry = {"name": name, "sha256": sha256_hex(key), "scopes": scope}
    typer.echo(f"  - {json.dumps(entry)}")


@app.command()
def bench(
    config: ConfigOpt = DEFAULT_CONFIG,
    seconds: Annotated[float, typer.Option(help="Seconds per load step.")] = 5.0,
    connections: Annotated[int, typer.Option(help="Concurrent connections.")] = 32,
    profiles: Annotated[int, typer.Option(help="Profiles for the memory figure.")] = 1_000_000,
) -> None:
    """Measure the floor, /v1/decide, /v1/events, in-actor time and memory per profile."""
    from bench.run import run

    run(
        _config(config), seconds=seconds, connections=connections, profiles=profiles, say=typer.echo
    )


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
