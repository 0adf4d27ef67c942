"""The pure core imports no Ray and no HTTP framework (see CONVENTIONS.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"ray", "fastapi", "starlette", "httpx", "uvicorn"}


def test_decisioning_imports_no_ray_or_http() -> None:
    offenders = []
    for path in sorted((ROOT / "decisioning").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []


def test_ray_calls_in_actors_live_in_remote_py() -> None:
    for path in sorted((ROOT / "actors").rglob("*.py")):
        if path.name != "remote.py":
            assert "import ray" not in path.read_text(), path.name
