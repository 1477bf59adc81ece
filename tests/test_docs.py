"""The docs are checked: the generated reference is current, and the README names every command."""

from __future__ import annotations

from pathlib import Path

from orchestrator.cli import COMMANDS
from orchestrator.reference import render_reference
from tasks import codecs, detectors, variants

ROOT = Path(__file__).resolve().parent.parent


def test_reference_is_current():
    assert (ROOT / "docs" / "REFERENCE.md").read_text() == render_reference(), (
        "docs/REFERENCE.md is stale: python -m orchestrator.reference > docs/REFERENCE.md"
    )


def test_reference_documents_every_plugin_and_setting():
    text = render_reference()
    for info in codecs.describe():
        assert f"### `{info.name}`" in text
        for s in info.settings:
            assert s.doc and f"| `{s.name}` |" in text
    for name in detectors.ADAPTERS.names():
        assert f"### `{name}`" in text
    for name in variants.VARIANTS.names():
        assert f"### `{name}`" in text
        for option in variants.VARIANTS.get(name).options.values():
            assert option.help, f"{name}: an option has no help text"


def test_readme_names_every_command_and_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    for name in COMMANDS:
        assert f"splitsweep {name}" in readme, name
    fence = readme.index("```bash")
    first = [line.split("#")[0].strip() for line in readme[fence:].splitlines()[1:3]]
    assert first == ["make demo", "make test"]
