"""Catalog versions: checked like a config file, stored by content, rolled back."""

from __future__ import annotations

from pathlib import Path

import pytest

from decisioning.config import Config
from decisioning.errors import ConfigError, NotFound
from decisioning.stores.catalogs import CatalogStore, catalog_of, version_of, with_catalog


def test_with_catalog_checks_like_a_config_file(small_config: Config) -> None:
    cat = catalog_of(small_config)
    cat["actions"][0]["lever"] = 5.0
    changed = with_catalog(small_config, cat)
    assert changed.actions[0].lever == 5.0 and changed.server == small_config.server
    assert version_of(changed) != version_of(small_config)
    assert version_of(with_catalog(small_config, catalog_of(small_config))) == version_of(
        small_config
    )
    cat["actions"][0]["eligibility"] = "profile.age >>> 3"
    with pytest.raises(ConfigError, match=r"actions\[0\].eligibility"):
        with_catalog(small_config, cat)
    with pytest.raises(ConfigError, match="only actions, decisioning and triggers"):
        with_catalog(small_config, {**catalog_of(small_config), "server": {}})
    with pytest.raises(ConfigError, match="holds 'actions'"):
        with_catalog(small_config, {"decisioning": {}})


def test_store_keeps_versions_for_rollback(small_config: Config, tmp_path: Path) -> None:
    store = CatalogStore(str(tmp_path))
    assert store.current() is None
    with pytest.raises(NotFound):
        store.previous()
    file_cat = catalog_of(small_config)
    new = catalog_of(small_config)
    new["actions"][0]["lever"] = 2.0
    store.remember("v0", file_cat)
    store.save("v1", new, "v0")
    assert store.current() == ("v1", new)
    assert store.previous() == ("v0", file_cat)
    store.rolled_back("v0")
    assert store.current() == ("v0", file_cat)
    with pytest.raises(NotFound):
        store.previous()
