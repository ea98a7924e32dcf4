"""The README quotes its measured figures from the committed bench run (perf/latest/), not from memory: its Measured
section is the text perf/readme.py builds from that run's CSVs."""

from pathlib import Path

import pytest

from perf.readme import measured

pytestmark = pytest.mark.unit

README = Path(__file__).parent.parent / "README.md"


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n") + len(f"\n## {title}\n")
    end = text.find("\n## ", start)
    return text[start : end if end >= 0 else None].strip()


def test_the_readme_measured_table_is_the_committed_run():
    assert section(README.read_text(), "Measured") == measured(), (
        "README.md's Measured section differs from the committed run: paste `python -m perf.readme` into it"
    )
