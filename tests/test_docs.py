"""The user docs stay current: docs/recipe.md is what the recipe schema generates."""

from __future__ import annotations

from conftest import ROOT

from neogen.recipe import recipe_reference_markdown


def test_recipe_reference_is_generated_from_the_schema() -> None:
    committed = (ROOT / "docs" / "recipe.md").read_text(encoding="utf-8")
    assert committed == recipe_reference_markdown() + "\n", (
        "docs/recipe.md is stale; regenerate it: neogen train --help-recipe --markdown > docs/recipe.md")
