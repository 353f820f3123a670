"""docs/design.md holds the vocabulary table exactly as the registries produce it."""

from __future__ import annotations

import re
from pathlib import Path

from kadeploy.vocabulary import markdown_table

DESIGN = Path(__file__).resolve().parents[2] / "docs" / "design.md"


def test_design_md_table_is_the_registries_output():
    text = DESIGN.read_text()
    found = re.search(r"<!-- vocabulary:begin -->\n(.*?)\n<!-- vocabulary:end -->", text, re.S)
    assert found, "docs/design.md lost its vocabulary markers"
    assert found.group(1) == markdown_table(), "regenerate it: python -m kadeploy.vocabulary"
