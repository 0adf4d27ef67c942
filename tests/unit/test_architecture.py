"""The pure core imports no Ray and no HTTP framework, and in actors/ only the edges
import Ray: every other module there is a plain class (see CONVENTIONS.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"ray", "fastapi", "starlette", "httpx", "uvicorn"}
# the modules of actors/ that make Ray actors of plain classes and hold Ray handles
EDGES = {"remote.py", "shard_actor.py"}


def _imported(path: Path) -> set[str]:
    """The top-level packages a module imports (absolute imports)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _actor_modules() -> dict[str, Path]:
    root = ROOT / "actors"
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*.py"))}


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


def test_in_actors_only_the_edges_import_ray() -> None:
    importing = {name for name, path in _actor_modules().items() if "ray" in _imported(path)}
    assert importing == EDGES  # an edge that no longer imports Ray leaves the list


def test_the_plain_actor_modules_load_without_ray() -> None:
    """Not even through another module: each is unit-tested without Ray."""
    plain = []
    for name in _actor_modules():
        parts = Path(name).with_suffix("").parts
        if name not in EDGES:
            plain.append(".".join(("actors", *parts[: -1 if parts[-1] == "__init__" else None])))
    code = f"import sys, {', '.join(plain)}; print('ray' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", plain


def test_the_client_needs_only_httpx_msgpack_and_xxhash() -> None:
    """nextbest_client is installed by channels that run none of the server: it imports
    the standard library, its own modules and its three dependencies, nothing else."""
    allowed = set(sys.stdlib_module_names) | {"nextbest_client", "httpx", "msgpack", "xxhash"}
    found = {
        f"{path.name}: {name}"
        for path in sorted((ROOT / "nextbest_client").rglob("*.py"))
        for name in _imported(path)
        if name not in allowed
    }
    assert found == set()
