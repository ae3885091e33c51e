"""Docs match the code: every repository path that the README, docs/ and the csrc comments name
(``cprl_fast/...``, ``csrc/...``, ``tests/...``, ``bench/...``, ``kernels/...``, ``docs/...``,
``results/...``, ``.ci/...``) exists, so a pointer cannot go stale silently."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: A repository path: one of the tracked top-level folders, then path characters.
PATH = re.compile(r"(?<![\w/.-])((?:cprl_fast|csrc|tests|bench|docs|kernels|results|\.ci)/"
                  r"[\w./-]*[\w/])")  # fmt: skip


def _documents() -> list[Path]:
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for suffix in ("h", "cpp", "cu", "cuh"):
        sources += sorted((ROOT / "csrc").rglob(f"*.{suffix}"))
    return sources


def test_every_path_the_docs_name_exists():
    missing = []
    for doc in _documents():
        for m in PATH.finditer(doc.read_text()):
            path = m.group(1).rstrip(".")
            if not any(c in path for c in "*<>{}") and not (ROOT / path).exists():
                missing.append(f"{doc.relative_to(ROOT)}: {path}")
    assert missing == [], missing


#: A markdown link's target: ``[text](target)``.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_every_relative_link_in_the_docs_resolves():
    # the README links its topics to docs/, whose pages link back with ../
    broken = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in LINK.findall(doc.read_text()):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = target.split("#")[0]
            if path and not (doc.parent / path).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert broken == [], broken


def test_the_readme_starts_small():
    # issue 29: the README is a first screen and a table of topics; the topics live in docs/
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    linked = set(LINK.findall("\n".join(lines)))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages <= linked, pages - linked


def test_the_layout_page_lists_every_test_file():
    listed = set(re.findall(r"`(test_\w+\.py)`", (ROOT / "docs" / "layout.md").read_text()))
    files = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    assert files - listed == set(), f"docs/layout.md's test table misses {sorted(files - listed)}"
    assert listed - files - {p.name for p in (ROOT / "bench").glob("test_*.py")} == set()
