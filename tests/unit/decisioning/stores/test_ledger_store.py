"""The budget ledger on disk: a supervisor killed anywhere in a grant (in the middle of
the save, or after it and before the answer) leaves a ledger that is whole JSON and
holds at least every grant it answered; the first file format is still read."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.fs as pafs

from decisioning.stores.ledger import LedgerStore
from tests.unit.ledger_child import ACTION, DAY, NOON

ROOT = Path(__file__).resolve().parents[4]
BUDGET, WANT = 151, 2


def _child(path: Path, die_at: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.unit.ledger_child",
            str(path),
            str(BUDGET),
            str(WANT),
            die_at,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def _run(path: Path, die_at: str, rng: random.Random) -> list[int]:
    """One supervisor's life: the answers it reported before it died (or finished)."""
    child = _child(path, die_at)
    watchdog = threading.Timer(120, child.kill)  # a hung child fails the test, not CI
    watchdog.start()
    try:
        assert child.stdout is not None
        lines = []
        if die_at == "none":  # killed by us, wherever it is after k answers
            for _ in range(rng.randint(0, 12)):
                if not (line := child.stdout.readline()):
                    break
                lines.append(line)
            child.send_signal(signal.SIGKILL)
        out, _ = child.communicate()
    finally:
        watchdog.cancel()
    answers = [int(x) for x in lines + out.split()]
    assert child.returncode == -signal.SIGKILL or answers[-1:] == [0], (die_at, answers)
    return answers


def test_a_supervisor_killed_anywhere_in_a_grant_never_answered_more_than_is_stored(
    tmp_path: Path,
) -> None:
    path = tmp_path / "budgets" / "ledger.json"
    rng = random.Random(15)
    lives = [
        f"{step}:{n}"
        for step, top in (("write", 3), ("replace", 3), ("answer", 3))
        for n in range(1, top + 1)
    ]
    lives += [f"fsync:{n}" for n in range(1, 7)]  # odd: before the file's; even: the directory's
    lives += ["none"] * 12 + ["done"]  # the last one grants the rest of the budget out
    answered = 0
    for die_at in lives:
        answers = _run(path, die_at, rng)
        answered += sum(answers)
        granted = LedgerStore(pafs.LocalFileSystem(), str(path)).load().granted
        if path.exists():  # whole JSON, whatever the child was doing when it died
            assert json.loads(path.read_text())["granted"] == granted
        assert answered <= granted.get(DAY, {}).get(ACTION, 0) <= BUDGET, die_at
    assert granted[DAY][ACTION] == BUDGET  # ...and it was granted out in the end
    assert [p.name for p in path.parent.iterdir()] == ["ledger.json"]  # no temp file left


def test_the_first_format_is_read_and_its_older_days_stay_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps({DAY: {ACTION: 5}}))  # before `pruned_before` was stored
    store = LedgerStore(pafs.LocalFileSystem(), str(path), clock=lambda: NOON)
    assert store.grant(ACTION, DAY, 10, 8) == 3
    assert store.grant(ACTION, "2026-11-23", 10, 8) == 0  # it may have been pruned
    assert json.loads(path.read_text()) == {
        "format": 2,
        "pruned_before": DAY,
        "granted": {DAY: {ACTION: 8}},
    }
