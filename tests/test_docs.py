"""The user docs stay current: docs/recipe.md is what the recipe schema generates, the README is a short guide whose
first screen holds the two set-up commands, and CI runs the README's test command."""

from __future__ import annotations

from conftest import ROOT

from neogen.recipe import recipe_reference_markdown

README = ROOT / "README.md"


def test_recipe_reference_is_generated_from_the_schema() -> None:
    committed = (ROOT / "docs" / "recipe.md").read_text(encoding="utf-8")
    assert committed == recipe_reference_markdown() + "\n", (
        "docs/recipe.md is stale; regenerate it: neogen train --help-recipe --markdown > docs/recipe.md")


def test_readme_is_a_short_guide_that_links_the_docs() -> None:
    size = README.stat().st_size
    assert size <= 12_000, f"README.md is {size:,} bytes; keep it a user guide of at most 12,000 (details in docs/)"
    text = README.read_text(encoding="utf-8")
    for link in ("docs/design.md", "docs/recipe.md", "bench/README.md"):
        assert f"]({link})" in text, f"README.md does not link {link}"
        assert (ROOT / link).is_file(), link


def setup_commands() -> list[str]:
    """The README's one-line set-up commands (`python3 -m venv ...`) in its first 40 lines."""
    head = README.read_text(encoding="utf-8").splitlines()[:40]
    return [line.strip() for line in head if line.strip().startswith("python3 -m venv .venv && ")]


def test_readme_first_screen_holds_the_commands_and_the_example() -> None:
    commands = setup_commands()
    assert [c.rsplit("&& ", 1)[-1] for c in commands] == ["neogen train recipes/quickstart.yaml", "pytest"], commands
    head = "\n".join(README.read_text(encoding="utf-8").splitlines()[:40])
    assert "neogen classify runs/quickstart" in head and "neogen.classify(" in head


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").replace(" -q ", " ")
    test_command = setup_commands()[-1]
    assert test_command in ci.splitlines(), f".ci/run does not run the README's test command: {test_command}"
