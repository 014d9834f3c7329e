"""Rendering of task arguments: types kept where a whole expression gives a collection."""

import pytest

from fleet.templating import TemplateError, evaluate, render


def test_whole_expression_keeps_lists_and_mappings():
    assert render("{{ pkgs }}", {"pkgs": ["git", "cmake"]}) == ["git", "cmake"]
    assert render(" {{ env }} ", {"env": {"A": "1"}}) == {"A": "1"}


def test_scalars_and_mixed_text_stay_text():
    assert render("{{ v }}", {"v": 3.12}) == "3.12"
    assert render("{{ a }}/{{ b }}", {"a": "x", "b": "y"}) == "x/y"
    assert render("[{{ a }}]", {"a": [1]}) == "[[1]]"


def test_undefined_variable_is_named():
    with pytest.raises(TemplateError, match="undefined variable 'missing'"):
        render("{{ missing }}", {})
    with pytest.raises(TemplateError, match="undefined variable 'missing'"):
        evaluate("missing > 1", {})


def test_versions_compare_as_versions_not_text():
    assert evaluate("d is version('>=', '570.148.08')", {"d": "580.159.04"})
    assert not evaluate("d is version('>=', '570.148.08')", {"d": "570.86.15"})
    assert evaluate("'570.148.08' is version('>', '570.99')", {})  # text order would say no
