"""`simulate` over Ray tasks gives the same report as one process (customers are
independent, so splitting them by hash changes nothing)."""

from __future__ import annotations

from tests.integration.harness import Server
from tests.unit.training.test_simulate import _stream
from training.simulate import simulate


def test_simulation_split_over_ray_tasks_matches_one_process(server: Server) -> None:
    events, requests = _stream(30)
    config = server.config
    one = simulate(config, _candidate_for(config), events, requests, progress=lambda m: None)
    split = simulate(
        config, _candidate_for(config), events, requests, workers=2, progress=lambda m: None
    )
    for a, b in zip(one, split, strict=True):
        assert a.to_dict()["decisions"] == b.to_dict()["decisions"] == 60
        assert a.removed == b.removed and a.shown == b.shown and a.nothing == b.nothing


def _candidate_for(config):  # type: ignore[no-untyped-def]
    from decisioning.stores.catalogs import catalog_of, with_catalog

    cat = catalog_of(config)
    cat["decisioning"]["channel_caps"] = {"web": {"per_day": 1}}
    return with_catalog(config, cat)
