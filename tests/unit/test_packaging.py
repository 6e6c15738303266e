"""`pip install quota-bot` must be able to talk to Discord and Slack: both libraries are default
dependencies, and the old extras still install (as empty aliases)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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


# --- the lock for Procfile platforms (their buildpacks install requirements.txt, not pyproject.toml) ---

def _locked() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt: {line!r} is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version
    return pins


def test_every_runtime_dependency_has_an_upper_bound_on_its_next_major():
    from packaging.requirements import Requirement

    for text in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(text)
        if requirement.name == "tzdata":  # versioned by year (time zone rules): always the newest
            continue
        assert any(spec.operator in ("<", "<=") for spec in requirement.specifier), f"{text}: no upper bound"


def test_the_lock_pins_every_runtime_dependency_within_pyproject_s_ranges():
    from packaging.requirements import Requirement

    pins = _locked()
    for text in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(text)
        key = re.sub(r"[-_.]+", "-", requirement.name.lower())
        assert key in pins, f"{requirement.name} is missing from requirements.txt: re-run the README's lock command"
        assert requirement.specifier.contains(pins[key], prereleases=True), (
            f"requirements.txt pins {requirement.name}=={pins[key]}, outside {requirement.specifier}")


def test_the_python_version_file_names_the_version_the_project_requires():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    version = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", version), version
    floor = re.search(r">=\s*(3\.\d+)", project["requires-python"]).group(1)
    assert tuple(map(int, version.split("."))) >= tuple(map(int, floor.split(".")))


def test_the_readme_gives_the_lock_command():
    readme = (ROOT / "README.md").read_text()
    header = (ROOT / "requirements.txt").read_text()
    command = re.search(r"#\s+(pip-compile [^\n]+)", header).group(1).strip()
    assert command in readme, f"the README should give the command that made requirements.txt: {command}"
