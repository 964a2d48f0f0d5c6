"""The README as a new user reads it: a table of contents that matches its sections, links that lead
somewhere in this repository, and no pointer to a document that is not in it."""

from __future__ import annotations

import re

from tests.helpers.paths import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _anchor(heading: str) -> str:
    # GitHub's rule: lower case; keep letters, digits, spaces, hyphens, underscores; spaces to hyphens.
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _sections() -> list[str]:
    lines, fenced = [], False
    for line in README.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("## ") and line != "## Contents":
            lines.append(line[3:].strip())
    return lines


def test_the_contents_list_every_section_in_order() -> None:
    block = README.split("## Contents\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^- \[(.+)\]\(#(.+)\)$", block, re.M)
    expected = [(title, _anchor(title)) for title in _sections()]
    wanted = "\n".join(f"- [{t}](#{a})" for t, a in expected)
    assert listed == expected, f"the contents should read:\n{wanted}"


def test_every_file_it_names_is_here() -> None:
    # Links, and paths written as code (`config/rollguard.yaml`): a renamed file must not leave a stale name.
    links = [t for t in re.findall(r"\]\(([^)#][^)]*)\)", README) if not re.match(r"[a-z]+:", t)]
    named = re.findall(r"`((?:proxy|config|benchmarks|tests|deploy|\.ci)/[\w./-]+)`", README)
    assert len(named) >= 10
    missing = sorted({t.split("#")[0] for t in links + named if not (ROOT / t.split("#")[0]).exists()})
    assert missing == []


def test_no_pointer_to_a_document_outside_the_repository() -> None:
    for name in ("PRODUCT", "ARCHITECTURE", "LAYOUT.md", "checklists/"):
        assert name not in README, name
