"""The shards' state dir fills up or turns read-only: events get 503 (never a 500, never
an acknowledgement of what could not be logged), and once space or write access comes
back the same client retries are acknowledged, each event counted once.

The state dir is a small tmpfs mounted for the test (root in the test sandbox; the test
is skipped, saying why, where mounting is not allowed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import ray

from tests.integration.chaos import customers_per_shard, profile_counts
from tests.integration.harness import FIGURES, Server, Session, running_server, wait_until


@contextlib.contextmanager
def _tmpfs(mnt: Path) -> Iterator[Path]:
    mnt.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    with _tmpfs(tmp_path / "state") as mnt:
        yield mnt


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem is full."""
    filler = directory / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        while True:
            f.write(b"\0" * (1 << 20))
            f.flush()
    with contextlib.suppress(OSError), open(filler, "ab") as f:  # the last partial pages
        while True:
            f.write(b"\0" * 512)
            f.flush()
    return filler


def _remount(directory: Path, mode: str, check: bool = False) -> bool:
    done = subprocess.run(["mount", "-o", f"remount,{mode}", str(directory)], capture_output=True)
    assert done.returncode == 0 or not check, done.stderr
    return done.returncode == 0


def wait_until_or_none(condition: Callable[[], bool], timeout: float) -> bool:
    """`condition()` polled for `timeout` seconds: whether it came true."""
    try:
        wait_until(condition, timeout)
    except AssertionError:
        return False
    return True


def _send(client: httpx.Client, ev: dict[str, str], statuses: Counter[int]) -> int:
    try:
        status = client.post("/v1/events", json=ev).status_code
    except httpx.HTTPError:
        status = 0
    statuses[status] += 1
    return status


def _outage(server: Server, break_it: Callable[[], None], mend: Callable[[], None]) -> str:
    """Events before, during and after the storage outage; every event is retried with
    its own id until acknowledged. Returns the figures line."""
    customers = [c for cs in customers_per_shard(server, 3, "disk").values() for c in cs]
    acked: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    pending: list[dict[str, str]] = []
    n = 0

    def event() -> dict[str, str]:
        nonlocal n
        n += 1
        cid = customers[n % len(customers)]
        return {"customer_id": cid, "type": "page_view", "event_id": f"disk-{n}"}

    with server.client() as c:
        for _ in range(3 * len(customers)):
            ev = event()
            assert _send(c, ev, statuses) == 200
            acked[ev["customer_id"]] += 1
        break_it()
        during = 0
        while len(pending) < 20:  # (a log page may still have room for a few records)
            assert during < 5000, statuses
            ev, during = event(), during + 1
            if _send(c, ev, statuses) == 200:
                acked[ev["customer_id"]] += 1  # logged: it had room
            else:
                pending.append(ev)
        assert set(statuses) <= {0, 200, 503}, statuses  # refused, never a 500
        mend()
        for ev in pending + [event() for _ in range(3 * len(customers))]:
            wait_until(lambda ev=ev: _send(c, ev, statuses) == 200, 120, f"{ev['event_id']}")
            acked[ev["customer_id"]] += 1
    assert set(statuses) <= {0, 200, 503}, statuses
    counts = profile_counts(server, customers)
    assert counts == dict(acked), (counts, acked)  # each acknowledged event once, all there
    return f"{len(pending)} of {during} events refused during the outage, answers {dict(statuses)}"


def test_a_full_state_dir_refuses_then_recovers(
    session: Session, state_dir: Path, tmp_path: Path
) -> None:
    filler: list[Path] = []
    with running_server(
        session, tmp_path / "data", "disk-full", NEXTBEST_STATE_DIR=str(state_dir)
    ) as s:
        line = _outage(s, lambda: filler.append(_fill(state_dir)), lambda: filler[0].unlink())
    FIGURES.append(f"state dir full: {line}")


@pytest.fixture
def shard0_dir(tmp_path: Path) -> Iterator[Path]:
    """Shard 0's own dir under the state dir, a tmpfs of its own (so it can be made
    read-only while shard 1 keeps writing next to it)."""
    state = tmp_path / "state"
    with _tmpfs(state / "0") as mnt:
        yield mnt


def test_a_read_only_state_dir_refuses_then_recovers(
    session: Session, shard0_dir: Path, tmp_path: Path
) -> None:
    """Shard 0 restarts onto a read-only dir (a volume mounted read-only): it waits,
    its customers get 503 meanwhile, and it recovers once the dir is writable."""
    state = shard0_dir.parent

    def break_it() -> None:
        shard = ray.get_actor("shard-0", namespace=s.config.server.namespace)
        for _ in range(20):  # a writer has the dir open: a read-only remount is refused
            pid = ray.get(shard.pid.remote(), timeout=60)
            os.kill(pid, signal.SIGKILL)
            if wait_until_or_none(lambda: _remount(shard0_dir, "ro"), 1.0):
                return  # before its next instance opened the dir again
        raise AssertionError("could not make shard 0's dir read-only")

    with running_server(session, tmp_path / "data", "disk-ro", NEXTBEST_STATE_DIR=str(state)) as s:
        try:
            line = _outage(s, break_it, lambda: _remount(shard0_dir, "rw", check=True))
        finally:
            _remount(shard0_dir, "rw")  # the server's stop writes its snapshot there
    FIGURES.append(f"state dir read-only: {line}")
