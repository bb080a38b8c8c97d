"""docs/configuration.md's table is the settings model: same variables, aliases, defaults."""

from __future__ import annotations

import re
from pathlib import Path

from fsftpd.appliance.cli import variables

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def documented() -> dict[str, tuple[tuple[str, ...], str]]:
    text = DOC.read_text()
    section = text.split("## Every variable", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[tuple[str, ...], str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        aliases = tuple(re.findall(r"`([^`]+)`", cells[1]))
        rows[cells[0].strip("`")] = (aliases, cells[2].strip("`"))
    return rows


def test_the_table_lists_every_variable_alias_and_default() -> None:
    model = {name: (tuple(aliases), default) for name, aliases, default, _ in variables()}
    assert documented() == model


def test_the_readme_starts_with_explicit_demo_credentials() -> None:
    readme = (DOC.parent.parent / "README.md").read_text()
    first = readme.index("```sh")
    block = readme[first: readme.index("```", first + 5)]
    assert "FSFTPD_USER=demo FSFTPD_PASSWORD=demo" in block
    after = readme[readme.index("```", first + 5):]
    assert after.lstrip("`\n").startswith("Then, from another terminal")
