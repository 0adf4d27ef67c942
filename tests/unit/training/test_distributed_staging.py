"""The rows Ray Train's workers read: staged as one Parquet file per worker, every row
once, in order, bit for bit (the values were rounded as served before: they stay so)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from training.distributed import stage


def test_staged_rows_read_back_bit_for_bit_one_file_per_worker(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(101, 3))
    x[:, 0] = x[:, 0].astype(np.float32)  # as served: a float32 profile feature
    x[5, 1] = np.nan  # a missing value
    y = (rng.random(101) < 0.3).astype(np.float64)
    directory = stage(str(tmp_path / "train"), x, y, ["a", "b", "c"], 4)
    files = sorted(p.name for p in Path(directory).iterdir())
    assert files == [f"part-{i}.parquet" for i in range(4)]
    sizes = [pq.read_table(Path(directory, f)).num_rows for f in files]
    assert sizes == [26, 25, 25, 25]
    back = pq.read_table(directory)
    assert back.column_names == ["a", "b", "c", "__label__"]
    got = np.column_stack([back[c].to_numpy() for c in ("a", "b", "c")])
    np.testing.assert_array_equal(got, x)  # NaN where it was, every other value exactly
    np.testing.assert_array_equal(back["__label__"].to_numpy(), y)
