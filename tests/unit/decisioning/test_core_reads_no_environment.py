"""The pure core never reads the environment: the process edge (serving/, actors/, the
CLI) resolves what the config names and hands it in (see CONVENTIONS.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
READERS = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def environment_reads(source: str) -> list[int]:
    """Lines of `source` that touch os.environ/os.getenv and friends, however imported."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            lines += [node.lineno for a in node.names if a.name in READERS]
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in READERS
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            lines.append(node.lineno)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
        ):
            lines.append(node.lineno)  # a way around the two above
    return lines


def test_decisioning_reads_no_environment_variable() -> None:
    offenders = []
    for path in sorted((ROOT / "decisioning").rglob("*.py")):
        offenders += [f"{path.relative_to(ROOT)}:{n}" for n in environment_reads(path.read_text())]
    assert offenders == []


def test_the_check_sees_every_way_of_reading_it() -> None:
    for source in (
        "import os\nx = os.environ.get('A')",
        "import os\nx = os.environ['A']",
        "import os\nx = os.getenv('A')",
        "from os import environ\n",
        "from os import getenv as g\n",
        "os = __import__('os')\n",
    ):
        assert environment_reads(source), source
    assert environment_reads("import os\nx = os.urandom(12)\ny = os.getpid()") == []
