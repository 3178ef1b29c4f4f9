"""The documentation speaks of the software alone.

docs/, README.md and the notebooks' Markdown cells describe what the software does and how it
was measured; they do not narrate how the work went (earlier runs, sessions, issues, who changed
what), cite files outside the repository, or name paths outside it. Code may read data from
outside the repository (tests and benchmarks skip cleanly without it); the text does not name
those paths.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (pattern, why it is not allowed), matched case-insensitively.
FORBIDDEN = [
    (r"BASELINES", "a file outside the repository"),
    (r"\.\./shared|\bshared/data\b", "a path outside the repository"),
    (r"\bissues?\s*#?\d", "an issue number"),
    (r"\bsessions?\b", "development history"),
    (r"\blease\b|\bGPU loan\b|\bloan(ed)?\b", "the development machine's allocation"),
    (r"\b(before|after|since|gone with|fixed (in|by)|made with)\s+commit\b", "a commit as history"),
    (r"\bfor the record\b|\bearlier runs?\b|\bprevious (runs?|version|work)\b", "development history"),
    (r"\bthis work\b|\bdeveloper\b|\bused to (be|push|take|give|need)\b", "development history"),
    (r"\bno GPU was available\b", "the development machine's allocation"),
]


def _texts():
    for path in sorted([*(ROOT / "docs").rglob("*.md"), ROOT / "README.md"]):
        yield str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] == "markdown":
                yield f"{path.relative_to(ROOT)} (cell {i})", "".join(cell["source"])


TEXTS = dict(_texts())


def test_texts_found():
    assert "README.md" in TEXTS and "docs/index.md" in TEXTS
    assert any(name.startswith("notebooks/quickstart.ipynb") for name in TEXTS)


@pytest.mark.parametrize(("pattern", "why"), FORBIDDEN, ids=[p for p, _ in FORBIDDEN])
def test_no_development_history(pattern, why):
    hits = []
    for name, text in TEXTS.items():
        for number, line in enumerate(text.splitlines(), 1):
            if re.search(pattern, line, flags=re.I):
                hits.append(f"{name}:{number}: {line.strip()}")
    assert not hits, f"{why}:\n" + "\n".join(hits)


def _sections(text: str):
    """(heading, text) of each section of a Markdown page (code blocks included in the text)."""
    heading, lines = "", []
    for line in text.splitlines():
        if re.match(r"#{1,6} ", line):
            yield heading, "\n".join(lines)
            heading, lines = line, []
        lines.append(line)
    yield heading, "\n".join(lines)


#: A table row holding times: a column or row in seconds or milliseconds.
TIMING_HEADER = re.compile(r"^\|.*(\((s|ms)\)|\[(s|ms)\]|\b(s|ms|seconds)\b\s*\|)", flags=re.M)


def test_every_timing_table_says_how_it_was_measured():
    """A section with a table of times names the command, the date and the machine."""
    checked = 0
    for name, text in TEXTS.items():
        if not name.startswith("docs/"):
            continue
        for heading, section in _sections(text):
            if not TIMING_HEADER.search(section):
                continue
            checked += 1
            where = f"{name}, section {heading!r}"
            assert re.search(r"\b20\d\d-\d\d-\d\d\b", section), f"{where}: timings without a date"
            assert re.search(r"benchmarks/\w+\.py", section), f"{where}: timings without a command"
            assert re.search(r"machine|CPU|GPU", section), f"{where}: timings without the machine"
    assert checked >= 4  # performance.md (3 tables) and posteriors.md at least
