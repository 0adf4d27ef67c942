"""Champion, challenger, shadow: alias transitions, sticky shares, shadow scores in the
log, live metrics per version."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pytest

from actors.shard import Shard
from decisioning.config import Config, LogsSpec
from decisioning.errors import ModelError
from decisioning.policy.scoring import ModelBundle, ModelManifest
from decisioning.stores.decision_log import DecisionLog
from decisioning.stores.registry import Aliases, Registry
from tests.unit import edge
from tests.unit.decisioning.policy.test_decide import Clock
from tests.unit.models import tiny_model


def test_alias_transitions() -> None:
    a = Aliases().promote(1)
    assert a == Aliases(champion=1)
    a = a.split(2, 0.25)
    assert (a.challenger, a.share, a.shadow) == (2, 0.25, False)
    a = a.promote()  # the challenger wins
    assert a == Aliases(champion=2, previous=(1,))
    a = a.promote(3).rollback()
    assert a == Aliases(champion=2, previous=(1,))
    assert a.rollback() == Aliases(champion=1)
    assert a.split(4, 0.5, shadow=True).share == 0.0  # shadow: nobody is decided by it
    assert a.split(4, 0.5).split(None, 0).challenger is None
    for bad in (
        lambda: Aliases().promote(),
        lambda: Aliases(champion=1).rollback(),
        lambda: Aliases(champion=1).split(1, 0.1),
        lambda: Aliases(champion=1).split(2, 1.5),
    ):
        with pytest.raises(ModelError):
            bad()


def test_registry_reads_a_legacy_deployed_pointer_and_writes_aliases(
    small_config: Config, tmp_path: Path
) -> None:
    reg = Registry(str(tmp_path))
    for v in (1, 2):
        reg.register(_version(small_config, v))
    (tmp_path / "models" / "propensity" / "deployed.json").write_text('{"version": 1}')
    assert reg.aliases("propensity") == Aliases(champion=1)
    reg.set_deployed("propensity", 2)
    assert reg.aliases("propensity") == Aliases(champion=2, previous=(1,))
    with pytest.raises(ModelError, match="not in the registry"):
        reg.set_aliases("propensity", Aliases(champion=7))


def _version(config: Config, version: int) -> ModelBundle:
    b = tiny_model(config, rounds=5 + version)
    m = ModelManifest(**{**b.manifest.to_dict(), "version": version})
    return ModelBundle.verified(m, b.model_text)


def test_a_challenger_decides_for_a_sticky_share_and_shadow_is_only_logged(
    small_config: Config, tmp_path: Path
) -> None:
    logs = DecisionLog(str(tmp_path / "logs"), 0, LogsSpec(roll_s=3600))
    shard = Shard(0, small_config, [_version(small_config, 1)], clock=Clock(), logs=logs)
    v2 = _version(small_config, 2)
    shard.stage_model(v2.manifest.to_dict(), v2.model_text, None, "challenger", 0.3, False)
    assert shard.model_versions() == {"propensity": "propensity@1"}  # staged only
    shard.commit_model("propensity")
    customers = [f"c-{i}" for i in range(1000)]
    first = {}
    for c in customers:
        d = edge.decide(shard, {"customer_id": c, "channel": "web"})
        first[c] = (d["variant"], d["model_version"])
        assert (
            d["model_version"]
            == {"champion": "propensity@1", "challenger": "propensity@2"}[d["variant"]]
        )
    share = sum(v == "challenger" for v, _ in first.values()) / len(customers)
    assert 0.25 < share < 0.35  # the hash spreads customers evenly (deterministic here)
    for c in customers[:200]:  # sticky: the same customer, the same variant
        d = edge.decide(shard, {"customer_id": c, "channel": "web"})
        assert (d["variant"], d["model_version"]) == first[c]
    # live metrics per version
    d = edge.decide(shard, {"customer_id": "c-1", "channel": "web"})
    edge.record_outcomes(
        shard,
        [
            {
                "decision_id": d["decision_id"],
                "action_id": d["actions"][0]["action_id"],
                "outcome": o,
            }
            for o in ("impression", "accept")
        ],
    )
    stats = shard.status()["variant_stats"]
    ref = d["model_version"]
    assert stats[ref]["impression"] == 1 and stats[ref]["accept"] == 1
    assert stats["propensity@1"]["decisions"] + stats["propensity@2"]["decisions"] == 1201
    # shadow: everyone gets the champion; the shadow's propensities are in the log
    shard.stage_model(v2.manifest.to_dict(), v2.model_text, None, "challenger", 0.0, True)
    shard.commit_model("propensity")
    shard.logs.flush()
    before = ds.dataset(tmp_path / "logs" / "decisions", partitioning="hive").count_rows()
    for c in customers[:50]:
        assert edge.decide(shard, {"customer_id": c, "channel": "web"})["variant"] == "champion"
    shard.logs.flush()
    rows = ds.dataset(tmp_path / "logs" / "decisions", partitioning="hive").to_table()
    rows = rows.slice(0, rows.num_rows).to_pylist()
    shadowed = [r for r in rows if r["shadow_version"] is not None]
    assert len(rows) - before == len(shadowed) + 50  # card, loan scored in shadow; tip not
    assert {r["shadow_version"] for r in shadowed} == {"propensity@2"}
    assert all(r["model_version"] == "propensity@1" for r in shadowed)
    assert any(r["shadow_propensity"] != r["propensity"] for r in shadowed)
    # ending the challenger
    shard.stage_no_challenger("propensity")
    shard.commit_model("propensity")
    assert shard.status()["challengers"] == {}
