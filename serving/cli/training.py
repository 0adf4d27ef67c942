"""`nextbest train`, `retrain`, `simulate` and `evaluate`: the jobs that learn from
tables and logs, run here or on Ray (RAY_ADDRESS: a cluster)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from decisioning.config import Config
from decisioning.errors import NextbestError
from serving.cli import client, render
from serving.cli.common import DEFAULT_CONFIG, OUTCOME_NAMES, ConfigOpt, UrlOpt, fail, read_config

__all__ = ["evaluate_cmd", "ray_for_training", "retrain_cmd", "simulate_cmd", "train_cmd"]

LogsOpt = Annotated[str | None, typer.Option(help="Logs dir/URI (default: the config's).")]


def _check_outcomes(positive: list[str] | None) -> None:
    bad = [p for p in positive or () if p not in OUTCOME_NAMES]
    if bad:
        raise fail(f"not outcomes: {', '.join(bad)} (known: {', '.join(OUTCOME_NAMES)})")


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
    logs: LogsOpt = None,
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
    cfg = read_config(config)
    if (table is None) == (not from_logs):
        raise fail("give a TABLE, or --from-logs (not both)")
    if workers is None and os.environ.get("RAY_ADDRESS"):
        workers = 2
    out_dir = str(out) if out else None
    with ray_for_training(workers):
        try:
            if from_logs:
                _train_from_logs(
                    cfg,
                    logs,
                    name,
                    rounds,
                    out_dir,
                    workers,
                    positive=positive,
                    window=window,
                    include_open=include_open_windows,
                )
                return
            assert table is not None
            path = _train_table(cfg, table, name or "propensity", label, rounds, out_dir, workers)
        except NextbestError as e:
            raise fail(f"train: {e}") from None
        typer.echo(f"deploy it with: nextbest models deploy {path}")


@contextlib.contextmanager
def ray_for_training(workers: int | None) -> Iterator[None]:
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


def _train_table(
    cfg: Config,
    table: Path,
    name: str,
    label: str,
    rounds: int,
    out_dir: str | None,
    workers: int | None,
) -> str:
    """A model version from a table; where it was written."""
    from training.train import read_table, train

    result = train(
        read_table(table),
        cfg,
        name=name,
        label=label,
        rounds=rounds,
        out_dir=out_dir,
        progress=typer.echo,
        workers=workers,
    )
    return result.path


def _train_from_logs(
    cfg: Config,
    logs: str | None,
    name: str | None,
    rounds: int,
    out_dir: str | None,
    workers: int | None,
    *,
    positive: list[str] | None,
    window: str,
    include_open: bool,
) -> None:
    """A model version per model logged (or `name`), each from its decisions' outcomes."""
    from decisioning.stores.decision_log import logs_root
    from training.from_logs import logged_models, parse_window, table_from_logs
    from training.train import train

    source = logs or logs_root(cfg.server.data_dir, cfg.logs)
    _check_outcomes(positive)
    names = [name] if name else logged_models(source)
    if out_dir is not None and len(names) > 1:
        raise fail(f"--out takes one model; the logs hold {', '.join(names)}: --name")
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
            out_dir=out_dir,
            training_info=got.info,
            progress=typer.echo,
            workers=workers,
        )
        typer.echo(f"deploy it with: nextbest models deploy {result.path}")


def retrain_cmd(
    config: ConfigOpt = DEFAULT_CONFIG,
    name: Annotated[str, typer.Option(help="Model name.")] = "propensity",
    every: Annotated[str, typer.Option(help="Time between rounds, e.g. 1h.")] = "1h",
    lookback: Annotated[str, typer.Option(help="Logs to train on, e.g. 30d.")] = "30d",
    margin: Annotated[float, typer.Option(help="AUC the new one must gain to win.")] = 0.005,
    rounds: Annotated[int, typer.Option(help="Boosting rounds.")] = 200,
    window: Annotated[str, typer.Option(help="Attribution window.")] = "7d",
    once: Annotated[bool, typer.Option("--once", help="One round, then exit.")] = False,
    logs: LogsOpt = None,
    url: UrlOpt = None,
) -> None:
    """Every EVERY: train on the last LOOKBACK of logs, register the version, and promote
    it on the running server only if it beats the champion by MARGIN (held-out AUC)."""
    from decisioning.stores.decision_log import logs_root
    from training.from_logs import parse_window
    from training.retrain import retrain_once

    cfg = read_config(config)
    try:
        period, back, win = parse_window(every), parse_window(lookback), parse_window(window)
    except NextbestError as e:
        raise fail(str(e)) from None

    def promote(model: str, version: int) -> None:
        path = f"/v1/models/{model}/promote"
        typer.echo(render.rollout(client.admin_post(cfg, url, path, {"version": version})))

    source = logs or logs_root(cfg.server.data_dir, cfg.logs)
    while True:
        started = time.monotonic()
        try:
            retrain_once(
                cfg, source, name, back, margin, promote, rounds, window_s=win, progress=typer.echo
            )
        except NextbestError as e:
            if once:
                raise fail(f"retrain: {e}") from None
            typer.secho(f"retrain round failed, next in {every}: {e}", fg="red", err=True)
        except typer.Exit:  # the server refused or was not reachable (already said)
            if once:
                raise
            typer.secho(f"promotion failed, next round in {every}", fg="red", err=True)
        if once:
            return
        time.sleep(max(0.0, period - (time.monotonic() - started)))


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

    cfg = read_config(config)
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
    except (OSError, yaml.YAMLError, NextbestError) as e:
        raise fail(f"simulate: {e}") from None
    with ray_for_training(workers):
        cur, cand = simulate(cfg, candidate, ev, req, workers, progress=typer.echo)
    if as_json:
        typer.echo(json.dumps({"current": cur.to_dict(), "candidate": cand.to_dict()}, indent=2))
        return
    for line in render.simulation(cur.to_dict(), cand.to_dict()):
        typer.echo(line)


def evaluate_cmd(
    model: Annotated[str, typer.Option(help="The candidate, name@version.")],
    config: ConfigOpt = DEFAULT_CONFIG,
    logs: LogsOpt = None,
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

    cfg = read_config(config)
    _check_outcomes(positive)
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
        raise fail(f"evaluate: {err}") from None
    if as_json:
        typer.echo(json.dumps(e.to_dict(), indent=2))
        return
    for line in render.evaluation(model, e):
        typer.echo(line)
