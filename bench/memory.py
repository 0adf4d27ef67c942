"""Memory per profile: the store's columns and its id index, for `n` profiles of 40
features (traced with tracemalloc, in this process)."""

from __future__ import annotations

import time
import tracemalloc

from bench.common import config40
from decisioning.config import Config
from decisioning.profile import Event, ProfileSchema, ProfileStore

__all__ = ["memory_per_profile"]


def memory_per_profile(cfg: Config, n: int) -> dict[str, float]:
    cfg40 = config40(cfg)
    schema = ProfileSchema(cfg40)
    tracemalloc.start()
    store = ProfileStore(schema, capacity=n)
    base = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        store.row(f"customer-{i:08d}")
    index = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    store.apply(Event("customer-00000001", "page_view", time.time(), {"page": "cards"}))
    columns = store.nbytes()
    return {
        "features": len(schema.feature_names),
        "profiles": n,
        "columns_bytes": columns / n,
        "index_bytes": index / n,
        "total_bytes": (columns + index) / n,
        "f32_cols": schema.n32,
        "f64_cols": schema.n64,
        "i32_cols": schema.ni,
        "u16_cols": schema.n16,
    }
