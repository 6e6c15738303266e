"""`pip install quota-bot` must be able to talk to Discord and Slack: both libraries are default
dependencies, and the old extras still install (as empty aliases)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAT_LIBRARIES = ("discord.py", "slack-bolt", "slack-sdk")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def test_chat_libraries_are_default_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_name(r) for r in project["dependencies"]}
    assert set(CHAT_LIBRARIES) <= names, names
    extras = project["optional-dependencies"]
    for alias in ("discord", "slack", "all"):
        assert extras[alias] == [], f"[{alias}] must stay an empty alias"


def test_installed_metadata_requires_them_without_an_extra():
    required = [r for r in metadata.requires("quota-bot") or [] if "extra ==" not in r]
    assert set(CHAT_LIBRARIES) <= {_name(r) for r in required}, required


def test_readme_quick_start_installs_no_chat_extra():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(quick) == 2
    assert quick[0].endswith("pip install -q -e . && .venv/bin/quota-bot run")
    assert "[test]" in quick[1] and "all" not in quick[1].split("[", 1)[1]
