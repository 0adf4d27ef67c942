"""cluster.yaml passes Ray's own validation; serve_config.yaml is what `serve build` makes."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]


def _validate(config: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_is_valid_for_ray() -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    prepared = _validate(config)
    assert set(prepared["available_node_types"]) == {"head", "shard_worker"}
    assert prepared["head_node_type"] == "head"
    assert any("pip install" in c and "nextbest" in c for c in prepared["setup_commands"])


def test_cluster_starts_ray_with_the_serving_path_variables() -> None:
    from decisioning.config.loader import load_config
    from serving.server import serve_env

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    env = serve_env(load_config(ROOT / "examples" / "nextbest.yaml", {}))
    assert env
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(config[key])
        for name, value in env.items():
            if name == "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S":
                assert f"{name}=30" in start, key  # behind a load balancer
            else:
                assert f"{name}={value}" in start, (key, name)


def test_the_validation_would_catch_a_broken_cluster_yaml() -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["head_node_type"] = "missing"
    with pytest.raises(Exception, match="head_node_type"):
        _validate(config)


def test_serve_config_matches_serve_build(tmp_path: Path) -> None:
    out = tmp_path / "built.yaml"
    serve = Path(sys.executable).parent / "serve"
    subprocess.run(
        [str(serve), "build", "serving.deploy:app", "-o", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert out.read_text() == (ROOT / "serve_config.yaml").read_text(), (
        "serve_config.yaml is stale: run `serve build serving.deploy:app -o serve_config.yaml`"
    )
    built = yaml.safe_load(out.read_text())
    [app] = built["applications"]
    assert app["import_path"] == "serving.deploy:app"
    assert app["deployments"][0]["logging_config"]["enable_access_log"] is False


def test_cluster_yaml_keeps_ray_private() -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in workers
    assert "--dashboard-host=127.0.0.1" in head  # dashboard and Jobs API: never public
    assert any(k.endswith(".ray/auth_token") for k in config["file_mounts"])
