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
        for field in variants.VARIANTS.get(name).fields:
            assert field.doc, f"{name}: an option has no help text"


def test_readme_names_every_command_and_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    for name in COMMANDS:
        assert f"splitsweep {name}" in readme, name
    fence = readme.index("```bash")
    first = [line.split("#")[0].strip() for line in readme[fence:].splitlines()[1:3]]
    assert first == ["make demo", "make test"]


def test_printed_commands_name_the_script_that_runs_when_it_is_not_on_path(tmp_path, monkeypatch):
    from orchestrator.commands import demo

    bin_dir = tmp_path / "env" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "splitsweep").write_text("#!/bin/sh\n")
    (bin_dir / "splitsweep").chmod(0o755)
    monkeypatch.setattr(demo.sys, "executable", str(bin_dir / "python"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert demo.program() == "env/bin/splitsweep"
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert demo.program() == "splitsweep"
