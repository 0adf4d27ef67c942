"""The README and docs/ hold together: every relative link and anchor resolves, every
code path they name exists, and the README stays a short front door with the two
quickstart commands (docs that drift from the tree are found here, not by a reader)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 400

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ID = re.compile(r"""<a\s+(?:id|name)=["']([^"']+)["']""")
# [text](target) and [text](target "title"); images too
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_CODE = re.compile(r"`[^`]*`")
# a path into the repository named in backticks, e.g. `decisioning/journal/wal.py`
_CODE_PATH = re.compile(
    r"`((?:decisioning|actors|serving|training|bench|nextbest_client|tests|examples|docs)/"
    r"[\w./-]*?)"
    r"(?::[\w.]+)?`"
)


def doc_files(root: Path = ROOT) -> list[Path]:
    """The README and every page under docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fenced = [], False
    for no, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((no, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed
    (word characters, spaces and hyphens stay), spaces become hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    kept = (c for c in text if c in " -_" or unicodedata.category(c)[0] in "LMN")
    return "".join(kept).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a page offers: its headings (GitHub numbers repeats -1, -2, ...)
    and explicit <a id=...>."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in prose_lines(path.read_text()):
        out.update(_HTML_ID.findall(line))
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(path: Path) -> list[str]:
    """The relative links of `path` whose file or anchor does not exist."""
    problems = []
    for no, line in prose_lines(path.read_text()):
        for target in _LINK.findall(_INLINE_CODE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.parent.name}/{path.name}:{no}: {target}"
            if not dest.exists():
                problems.append(f"{where}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where}: no heading with anchor #{anchor} in {dest.name}")
    return problems


def missing_code_paths(path: Path, root: Path = ROOT) -> list[str]:
    """Repository paths named in backticks that exist neither as given nor as a module
    (`actors/shard` names actors/shard.py or the package actors/shard/)."""
    problems = []
    for no, line in prose_lines(path.read_text()):
        for name in _CODE_PATH.findall(line):
            if "<" in name or "*" in name:  # a pattern such as shards/<i>/
                continue
            bare = name.rstrip("/")
            if not any((root / p).exists() for p in (bare, bare + ".py")):
                problems.append(f"{path.name}:{no}: `{name}` does not exist")
    return problems


def test_readme_is_a_short_front_door_with_both_quickstart_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < README_MAX_LINES, "reference belongs in docs/"
    code = "\n".join(line for line in text.splitlines() if line.startswith("make "))
    assert re.search(r"^make run\b", code, re.M), "the README must show `make run`"
    assert re.search(r"^make test\b", code, re.M), "the README must show `make test`"


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    assert broken_links(page) == []


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_code_path_named_exists(page: Path) -> None:
    assert missing_code_paths(page) == []


def test_every_doc_is_in_the_index_and_the_index_is_linked_from_the_readme() -> None:
    index = ROOT / "docs" / "README.md"
    listed = {t.partition("#")[0] for _, line in prose_lines(index.read_text())
              for t in _LINK.findall(line)}  # fmt: skip
    pages = {p.name for p in doc_files() if p.parent.name == "docs" and p != index}
    assert pages - listed == set(), "docs/README.md must list every page"
    readme_links = _LINK.findall((ROOT / "README.md").read_text())
    assert any(t.partition("#")[0] == "docs/README.md" for t in readme_links)


def test_slug_follows_github() -> None:
    assert slug("Rules: eligibility, applicability, suitability") == (
        "rules-eligibility-applicability-suitability"
    )
    assert slug("Reliability under fault (`make chaos`)") == "reliability-under-fault-make-chaos"
    assert slug("A full or read-only state dir") == "a-full-or-read-only-state-dir"
    assert slug("Send-time recomputation") == "send-time-recomputation"


def test_a_broken_link_or_anchor_or_path_is_found(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "decisioning").mkdir()
    (tmp_path / "decisioning" / "wal.py").write_text("")
    page = tmp_path / "docs" / "a.md"
    (tmp_path / "docs" / "b.md").write_text("# B\n\n## Two words\n\n## Two words\n")
    page.write_text(
        "# A\n\n[ok](b.md#two-words) [ok](b.md#two-words-1) [ok](#a) [web](https://x.y/z)\n"
        "[gone](c.md) [bad anchor](b.md#three) [self](#nope)\n"
        "`decisioning/wal` `decisioning/wal.py` `decisioning/gone.py` `decisioning/<i>/`\n"
        "```\n[in code](nowhere.md) `decisioning/in_code.py`\n```\n"
    )
    found = broken_links(page)
    assert [p.rsplit(": ", 2)[1] for p in found] == ["c.md", "b.md#three", "#nope"]
    assert missing_code_paths(page, tmp_path) == ["a.md:5: `decisioning/gone.py` does not exist"]
