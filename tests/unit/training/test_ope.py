"""Off-policy evaluation against ground truth, and exploration's logged probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from actors.shard import Shard
from decisioning.config import Config, ExplorationSpec, LogsSpec
from decisioning.config.loader import config_from_dict
from decisioning.policy.exploration import Explorer
from decisioning.stores.decision_log import DecisionLog
from decisioning.stores.registry import Registry
from tests.conftest import SMALL
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import NOW, Clock
from tests.unit.models import tiny_model
from training.ope import _per_decision, estimate, evaluate


def _synthetic(n: int, seed: int) -> dict[str, np.ndarray | float]:
    """Contexts, 3 actions with known reward probabilities q(x, a); the logging policy is
    epsilon-greedy (ε = 0.3) on a weak score, the target greedy on a better one."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    q = np.column_stack([0.2 + 0.15 * x, 0.25 - 0.1 * x, 0.1 + 0.3 * (x > 0.5)])
    logging_greedy = np.argmax(q + rng.normal(0, 0.2, q.shape), axis=1)
    eps, k = 0.3, 3
    explore = rng.random(n) < eps
    a = np.where(explore, rng.integers(0, k, n), logging_greedy)
    p = np.where(a == logging_greedy, 1 - eps + eps / k, eps / k)
    r = (rng.random(n) < q[np.arange(n), a]).astype(float)
    q_hat = np.clip(q + rng.normal(0, 0.05, q.shape), 0, 1)  # a decent reward model
    target = np.argmax(q_hat, axis=1)
    return {
        "r": r,
        "p": p,
        "match": target == a,
        "q_target": q_hat[np.arange(n), target],
        "q_logged": q_hat[np.arange(n), a],
        "truth": float(q[np.arange(n), target].mean()),  # the target's expected reward
        "logging_truth": float(q[np.arange(n), a].mean()),
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_estimators_agree_with_the_true_value_of_the_target_policy(seed: int) -> None:
    s = _synthetic(20_000, seed)
    e = estimate(s["r"], s["p"], s["match"], s["q_target"], s["q_logged"])
    truth = s["truth"]
    assert abs(truth - s["logging_truth"]) > 0.03  # the policies differ: a real test
    for name, (value, low, high) in (("ips", e.ips), ("snips", e.snips), ("dr", e.dr)):
        assert low < value < high
        assert abs(value - truth) < min(0.02, high - low), (name, value, truth, low, high)
    assert e.dr[2] - e.dr[1] <= e.ips[2] - e.ips[1]  # the reward model narrows the interval
    assert abs(e.logged - s["logging_truth"]) < 0.02


def test_the_intervals_cover_the_truth_about_as_often_as_they_say() -> None:
    covered = {"ips": 0, "snips": 0, "dr": 0}
    runs = 40
    for seed in range(100, 100 + runs):
        s = _synthetic(3000, seed)
        e = estimate(s["r"], s["p"], s["match"], s["q_target"], s["q_logged"], boot=300)
        for name, (_, low, high) in (("ips", e.ips), ("snips", e.snips), ("dr", e.dr)):
            covered[name] += low <= s["truth"] <= high
    # 95% intervals: 38 of 40 expected; fewer than 33 would be a broken interval
    assert all(n >= 33 for n in covered.values()), covered


def test_epsilon_greedy_and_thompson_probabilities() -> None:
    rng = np.random.default_rng(0)
    eg = Explorer(ExplorationSpec(policy="epsilon_greedy", epsilon=0.2), rng)
    picks = [eg.pick([0.5, 0.4, 0.1], [1, 1, 1]) for _ in range(5000)]
    np.testing.assert_allclose(picks[0].probability, [0.8 + 0.2 / 3, 0.2 / 3, 0.2 / 3])
    share = np.bincount([pk.index for pk in picks], minlength=3) / len(picks)
    np.testing.assert_allclose(share, picks[0].probability, atol=0.02)
    th = Explorer(ExplorationSpec(policy="thompson", strength=20, draws=4000), rng)
    pk = th.pick([0.3, 0.25, 0.01], [1.0, 1.0, 1.0])
    assert pk.probability.sum() == pytest.approx(1.0)
    assert pk.probability[0] > pk.probability[1] > pk.probability[2] >= 0


def test_evaluate_reads_the_logs_of_an_exploring_shard(tmp_path: Path) -> None:
    data = {
        **SMALL,
        "server": {**SMALL["server"], "data_dir": str(tmp_path / "data")},
        "decisioning": {
            **SMALL["decisioning"],
            "default_limit": 1,
            "exploration": {"policy": "epsilon_greedy", "epsilon": 0.3},
        },
    }
    config: Config = config_from_dict(data)
    registry = Registry(config.server.data_dir)
    registry.register(tiny_model(config))
    registry.set_deployed("propensity", 1)
    logs = DecisionLog(str(tmp_path / "logs"), 0, LogsSpec(roll_s=3600))
    shard = Shard(0, config, registry.deployed_bundles(), clock=Clock(), logs=logs)
    rng = np.random.default_rng(4)
    variants = set()
    for i in range(600):
        cid = f"c-{i}"
        edge.apply_events(
            shard,
            [
                {
                    "customer_id": cid,
                    "type": "profile_update",
                    "ts": NOW,
                    "properties": {"age": float(rng.integers(18, 70))},
                }
            ],
        )
        d = edge.decide(shard, {"customer_id": cid, "channel": "web"})
        variants.add(d["variant"])
        if d["actions"] and rng.random() < (0.4 if d["actions"][0]["action_id"] == "loan" else 0.1):
            edge.record_outcomes(
                shard,
                [
                    {
                        "decision_id": d["decision_id"],
                        "action_id": d["actions"][0]["action_id"],
                        "outcome": "accept",
                    }
                ],
            )
    assert variants == {"champion", "explore"}
    shard.logs.flush()
    e = evaluate(str(tmp_path / "logs"), config, "propensity@1", progress=lambda m: None)
    assert e.n == 600 and 0 < e.support < 1  # exploration: the greedy one disagrees sometimes
    assert e.ips[1] <= e.ips[0] <= e.ips[2] and e.dr[1] <= e.dr[0] <= e.dr[2]
    assert 0.0 < e.logged < 0.5


def test_cli_evaluate(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from serving.cli import app

    test_evaluate_reads_the_logs_of_an_exploring_shard(tmp_path)
    cfg = tmp_path / "c.yaml"
    data = {**SMALL, "server": {**SMALL["server"], "data_dir": str(tmp_path / "data")}}
    cfg.write_text(json.dumps(data))
    args = ["evaluate", "--model", "propensity@1", "--logs", str(tmp_path / "logs")]
    r = CliRunner().invoke(app, [*args, "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "DR" in r.output and "95% interval" in r.output
    r = CliRunner().invoke(app, [*args, "--config", str(cfg), "--json"])
    assert json.loads(r.stdout[r.stdout.index("{") :])["decisions"] == 600
    r = CliRunner().invoke(app, ["evaluate", "--model", "propensity", "--config", str(cfg)])
    assert r.exit_code == 1 and "name@version" in r.output


def test_per_decision_the_greedy_pick_on_the_candidate_against_what_was_shown() -> None:
    rows = pa.table(
        {
            "decision_id": ["d1", "d1", "d1", "d2", "d2", "d3", "d4", "d4"],
            "action_id": ["a", "c", "b", "a", "b", "a", "a", "b"],
            "position": pa.array([0, 1, None, None, 0, None, 0, None], pa.int64()),
            "probability": [0.7, 0.1, 0.2, 0.4, 0.6, 1.0, 0.9, 0.1],
        }
    )
    new_p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    priority = np.array([1.0, 3.0, 3.0, 2.0, 1.0, 5.0, -1.0, 0.0])
    rewards = {("d1", "a"): 1.0, ("d2", "a"): 1.0, ("d4", "a"): 1.0}
    r, p, match, q_t, q_l = _per_decision(rows, new_p, priority, rewards, 0.0)
    # d1 showed a; the candidate ranks c and b first (a tie: b by its id).
    # d2 showed b; the candidate would show a (its reward is for a, not for b).
    # d3 showed nothing: no action decision. d4 showed a; nothing clears the threshold.
    assert list(r) == [1.0, 0.0, 1.0]
    assert list(p) == [0.7, 0.6, 0.9]
    assert list(match) == [False, False, False]
    assert list(q_t) == [0.3, 0.4, 0.0]
    assert list(q_l) == [0.1, 0.5, 0.7]
    r, p, match, q_t, q_l = _per_decision(rows, new_p, priority, rewards, -2.0)
    assert list(match) == [False, False, False] and list(q_t) == [0.3, 0.4, 0.8]
    same = np.array([9.0, 3.0, 3.0, 2.0, 4.0, 5.0, 1.0, 0.0])  # now it agrees with d1, d2, d4
    assert list(_per_decision(rows, new_p, same, rewards, 0.0)[2]) == [True, True, True]
