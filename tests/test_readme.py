"""The README stays true: every setting is documented, and the two set-up commands exist."""

from __future__ import annotations

import re
from pathlib import Path

from rtdstream.config import env_names

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README, flags=re.MULTILINE))
    settings = env_names()
    assert settings - documented == set()
    assert documented - settings == set()  # and nothing that no longer exists


def test_the_set_up_commands_are_make_targets_and_ci_runs_the_test_one() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "make dev" in README and "make test" in README
    assert re.search(r"^dev:", makefile, flags=re.MULTILINE) and re.search(r"^test:", makefile, flags=re.MULTILINE)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_relative_links_of_the_readme_and_docs_point_at_files_of_the_repository() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = [
        f"{document.relative_to(ROOT)}: {target}"
        for document in documents
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text())
        if "://" not in target and not (document.parent / target).exists()
    ]
    assert (ROOT / "docs" / "architecture.md").is_file()
    assert broken == []
