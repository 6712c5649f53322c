"""The project's own files say what a user and a contributor need: how to install, how to
check a change, how the API changes, and CI that runs the README's test command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).parent.parent


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_the_readme_says_how_to_install_next_to_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    install = text.index("pip install 'llm-invocation[redis,yaml]'")
    assert install < text.index("make demo") < text.index("make test")


def test_the_readme_links_the_contributing_guide_and_the_deprecation_policy() -> None:
    text = (ROOT / "README.md").read_text()
    for target in ("CONTRIBUTING.md", "docs/deprecation.md"):
        assert f"({target})" in text
        assert (ROOT / target).is_file()


def test_the_contributing_guide_covers_set_up_checks_style_and_the_changelog() -> None:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    for heading in ("## Set-up", "## Checks", "## Style", "## Changelog"):
        assert heading in text
    assert "make test" in text


def test_the_deprecation_policy_names_the_changelog_sections_it_uses() -> None:
    text = (ROOT / "docs" / "deprecation.md").read_text()
    for word in ("DeprecationWarning", "**Deprecated**", "**Removed**", "Semantic Versioning"):
        assert word in text


def test_ci_runs_the_readmes_test_command_with_redis() -> None:
    workflow = load(ROOT / ".github" / "workflows" / "ci.yml")
    job = workflow["jobs"]["test"]
    assert "redis" in job["services"]
    assert job["env"]["LLM_REQUIRE_REDIS"] == "1"
    commands = [step.get("run", "") for step in job["steps"]]
    assert any(command.startswith("make test") for command in commands)


def test_a_tag_builds_and_publishes_a_release() -> None:
    workflow = load(ROOT / ".github" / "workflows" / "release.yml")
    # YAML reads the bare key `on` as True.
    trigger = workflow.get("on", workflow.get(True))
    assert trigger == {"push": {"tags": ["v*"]}}
    steps = [
        step.get("run", "") + str(step.get("uses", ""))
        for step in workflow["jobs"]["build"]["steps"]
    ]
    assert any("python -m build" in step for step in steps)
    assert any("_version.py" in step for step in steps)
    publish = workflow["jobs"]["publish"]["steps"]
    assert any("pypi-publish" in str(step.get("uses", "")) for step in publish)


@pytest.mark.parametrize("name", ["bug_report.yml", "feature_request.yml"])
def test_issue_templates_are_valid_forms(name: str) -> None:
    form = load(ROOT / ".github" / "ISSUE_TEMPLATE" / name)
    assert form["name"] and form["description"]
    assert any(item.get("validations", {}).get("required") for item in form["body"])
