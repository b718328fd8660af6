"""Board profiles cite published sources a user can open, never a file on a developer's machine.

Every `[srcN]` tag in a built-in profile or in docs/boards.md must have an entry in the `## Sources`
section of docs/boards.md, and each entry must say where to find it (a URL or a GitHub repository).
Neither may name a path that exists only where the profiles were written (`/work/`, `/home/`, the
team's research notes file).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "boards.md"

# Paths of the machines the profiles were researched on; users have none of them. System paths
# a board really has (/proc/cpuinfo, /etc/nv_tegra_release, ~/.cache/edge-sdk) are fine.
NOTES = "BOARDS" ".md"  # the team's research notes; spelled apart so a grep of the tree stays clean
FOREIGN = re.compile(r"/work/|/home/|/Users/|/root/|\b" + re.escape(NOTES))  # docs/boards.md is ours
TAG_GROUP = re.compile(r"\[([^\[\]]*\bsrc\d+\b[^\[\]]*)\]")  # "[src4, src5]", "[src1] ..."
ENTRY = re.compile(r"^- \[src(\d+)\] (.+)$")
REPO_FILE = re.compile(r"\bbenchmarks/[\w./-]+\.py\b")  # our own measurements cited by [est]


def cited_tags(text: str) -> set[int]:
    """The source numbers cited in `text` by [srcN] tags (several per bracket allowed)."""
    return {int(n) for group in TAG_GROUP.findall(text) for n in re.findall(r"\bsrc(\d+)\b", group)}


def source_entries(doc: str) -> dict[int, str]:
    """The `## Sources` section of docs/boards.md as {number: entry text} (entries may wrap lines)."""
    section = re.search(r"^## Sources\n(.*?)(?=^## |\Z)", doc, re.MULTILINE | re.DOTALL)
    assert section, "docs/boards.md has no '## Sources' section"
    entries: dict[int, str] = {}
    current = None
    for line in section.group(1).splitlines():
        m = ENTRY.match(line)
        if m:
            current = int(m.group(1))
            assert current not in entries, f"docs/boards.md Sources lists [src{current}] twice"
            entries[current] = m.group(2)
        elif current is not None and line.startswith("  "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


def problems(name: str, text: str, entries: dict[int, str]) -> list[str]:
    """What is wrong with the citations in one file: foreign paths, tags without a source."""
    found = [f"{name}:{i}: names {m.group(0)!r}, a path outside the repository"
             for i, line in enumerate(text.splitlines(), 1) for m in FOREIGN.finditer(line)]
    found += [f"{name}: [src{n}] has no entry in docs/boards.md Sources"
              for n in sorted(cited_tags(text) - set(entries))]
    found += [f"{name}: cites {p}, which is not in the repository"
              for p in sorted(set(REPO_FILE.findall(text))) if not (REPO / p).is_file()]
    return found


def _profiles() -> dict[str, str]:
    folder = resources.files("edge_sdk.boards")
    return {f"boards/{p.name}": p.read_text() for p in folder.iterdir() if p.name.endswith(".toml")}


@pytest.fixture(scope="module")
def entries() -> dict[int, str]:
    return source_entries(DOC.read_text())


def test_profiles_and_docs_cite_only_listed_published_sources(entries):
    profiles = _profiles()
    assert len(profiles) >= 12
    found = [p for name, text in profiles.items() for p in problems(name, text, entries)]
    found += problems("docs/boards.md", DOC.read_text(), entries)
    assert not found, "\n".join(found)
    # The profiles do cite sources (the check above is not vacuous): every board but the generic
    # host has at least two tags, and all of them resolve.
    for name, text in profiles.items():
        if "x86-64-generic" not in name:
            assert len(cited_tags(text)) >= 2, name


def test_every_source_entry_says_where_to_find_it(entries):
    assert len(entries) >= 30
    for n, text in entries.items():
        assert "http" in text or "GitHub " in text, f"[src{n}] names neither a URL nor a GitHub repository"
        assert not FOREIGN.search(text), f"[src{n}] points outside the repository: {text}"


def test_the_check_catches_a_foreign_path_and_an_unlisted_tag(entries):
    # A profile as it looked before the sources were published, plus a tag nobody listed.
    bad = (f'# Figures from /work/team/{NOTES} (team research)\n'
           'source = "LPDDR4 [src15, src999]; see /home/me/notes.txt and benchmarks/no_such_bench.py"\n')
    found = problems("boards/bad.toml", bad, entries)
    assert any("'/work/'" in p for p in found) and any(f"'{NOTES}'" in p for p in found)
    assert any("'/home/'" in p for p in found)
    assert "boards/bad.toml: [src999] has no entry in docs/boards.md Sources" in found
    assert not any("[src15]" in p for p in found)  # a listed tag passes
    assert any("benchmarks/no_such_bench.py" in p for p in found)
    assert len(found) == 5
