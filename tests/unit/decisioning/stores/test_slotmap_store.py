"""The slot map on disk: a map saved reads back the same; a save killed half way leaves
the old file whole; a file that is not a valid map stops the start, naming the file and
what to do; a data dir written before slot maps keeps its old layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from decisioning.profile.slots import SLOTS, Migration, SlotMap
from decisioning.stores.slotmap import SlotMapError, SlotMapStore, to_json


def _moved() -> SlotMap:
    """Three shards, the first 100 slots of shard 2 moved to shard 0, a move in flight."""
    owners = [slot * 3 // SLOTS for slot in range(SLOTS)]
    owners[-100:] = [0] * 100
    return SlotMap(7, tuple(owners), 3, Migration("m-1", 200, 300, 0, 1, "flipped"))


def test_a_saved_map_reads_back_the_same(tmp_path: Path) -> None:
    store = SlotMapStore.at(str(tmp_path))
    assert store.load() is None
    store.save(_moved())
    assert SlotMapStore.at(f"file://{tmp_path}").load() == _moved()
    data = json.loads((tmp_path / "slots" / "map.json").read_text())
    assert data["owners"][-1] == [SLOTS - 100, SLOTS, 0]  # runs, hi exclusive


def test_initial_saves_a_contiguous_map_once_and_then_keeps_the_stored_one(
    tmp_path: Path,
) -> None:
    store = SlotMapStore.at(str(tmp_path))
    first = store.initial(4)
    assert first == SlotMap.contiguous(4) and first.epoch == 1
    assert store.load() == first
    store.save(_moved())
    assert SlotMapStore.at(str(tmp_path)).initial(4) == _moved()  # the config no longer rules


def test_a_save_killed_half_way_leaves_the_old_map(tmp_path: Path) -> None:
    store = SlotMapStore.at(str(tmp_path))
    store.save(SlotMap.contiguous(2))
    torn = json.dumps(to_json(_moved()))[:500]  # what a writer killed mid-write left
    stale = tmp_path / "slots" / "map.json.4242.tmp"
    stale.write_text(torn)
    reader = SlotMapStore.at(str(tmp_path))  # a shard starting: reads, deletes nothing
    assert reader.load() == SlotMap.contiguous(2)
    assert stale.exists()  # (it could be the file of a save in flight)
    again = SlotMapStore.at(str(tmp_path))  # the next supervisor
    assert again.initial(3) == SlotMap.contiguous(2)  # the stored map, not the config's
    assert not stale.exists()  # cleaned up at its start
    again.save(_moved())
    assert again.load() == _moved()
    assert [p.name for p in (tmp_path / "slots").iterdir()] == ["map.json"]


def _bad(data: object) -> str:
    return json.dumps(data)


GOOD = to_json(SlotMap.contiguous(2))
CORRUPT = {
    "not json": "{epoch: 1",
    "not an object": _bad([1, 2]),
    "epoch 0": _bad({**GOOD, "epoch": 0}),
    "epoch true": _bad({**GOOD, "epoch": True}),
    "no shards": _bad({k: v for k, v in GOOD.items() if k != "shards"}),
    "a gap": _bad({**GOOD, "owners": [[0, 100, 0], [101, SLOTS, 1]]}),
    "an empty run": _bad({**GOOD, "owners": [[0, 0, 0], [0, SLOTS, 1]]}),
    "short": _bad({**GOOD, "owners": [[0, 100, 0], [100, SLOTS - 1, 1]]}),
    "past the end": _bad({**GOOD, "owners": [[0, 100, 0], [100, SLOTS + 1, 1]]}),
    "shard out of range": _bad({**GOOD, "owners": [[0, 100, 0], [100, SLOTS, 2]]}),
    "a run of strings": _bad({**GOOD, "owners": [["0", SLOTS, 0]]}),
    "a bad migration": _bad({**GOOD, "migration": {"id": "m", "lo": 5, "hi": 5}}),
    "a migration to shard 9": _bad(
        {**GOOD, "migration": {"id": "m", "lo": 0, "hi": 9, "src": 0, "dst": 9, "step": "frozen"}}
    ),
    "an unknown step": _bad(
        {**GOOD, "migration": {"id": "m", "lo": 0, "hi": 9, "src": 0, "dst": 1, "step": "half"}}
    ),
    "binary": b"\xff\xfe".decode("latin-1"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_a_corrupt_map_stops_the_start_naming_the_file(tmp_path: Path, case: str) -> None:
    path = tmp_path / "slots" / "map.json"
    path.parent.mkdir()
    path.write_text(CORRUPT[case], encoding="latin-1")
    with pytest.raises(SlotMapError) as err:
        SlotMapStore.at(str(tmp_path)).initial(2)
    assert str(path) in str(err.value)
    assert "restore it from a backup" in str(err.value)
    assert err.value.code == "slot_map_unreadable"
    assert path.read_text(encoding="latin-1") == CORRUPT[case]  # never replaced


def test_a_data_dir_from_before_slot_maps_keeps_its_layout(tmp_path: Path) -> None:
    for i in (0, 1):
        (tmp_path / "shards" / str(i)).mkdir(parents=True)
    (tmp_path / "shards" / "README").write_text("not a shard")
    slot_map = SlotMapStore.at(str(tmp_path)).initial(3)  # the config now says 3
    assert slot_map == SlotMap.contiguous(2)
    assert SlotMapStore.at(str(tmp_path)).load() == slot_map  # adopted once, stored


def test_shard_directories_under_a_state_dir_count_too(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for i in range(3):
        (state / str(i)).mkdir(parents=True)
    store = SlotMapStore.at(str(tmp_path / "data"), shards_root=str(state))
    assert store.initial(1) == SlotMap.contiguous(3)
    assert SlotMapStore.at(str(tmp_path / "fresh")).initial(1) == SlotMap.contiguous(1)
