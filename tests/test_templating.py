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


# ---- lazy, recursive variables ---------------------------------------------------------------------
from fleet.templating import UnsafeText, as_bool, compile_check, layered, unsafe  # noqa: E402


def test_variables_render_lazily_and_recursively_across_layers():
    scope = layered(
        ({"venv": "{{ project_dir }}/.venv", "unused": "{{ nowhere }}"}, True),  # defaults
        ({"home": "/home/u"}, True),  # inventory
        ({"project_dir": "{{ home }}/p"}, True),  # play vars
        ({"out": {"stdout": "{{ not rendered }}"}}, False),  # registered: data from the host
    )
    assert render("{{ venv }}", scope) == "/home/u/p/.venv"
    assert render("{{ out.stdout }}", scope) == "{{ not rendered }}"  # kept as data, never templated
    with pytest.raises(TemplateError, match="variable 'unused': undefined variable 'nowhere'"):
        render("{{ unused }}", scope)


def test_a_higher_layer_replaces_a_lower_one_of_either_kind():
    scope = layered(({"x": "{{ y }}", "y": 1}, True), ({"x": "data {{"}, False), ({"x": "{{ y + 1 }}"}, True))
    assert render("{{ x }}", scope) == "2"


def test_cycles_are_named():
    with pytest.raises(TemplateError, match="variable cycle: a -> b -> c -> a"):
        render("{{ a }}", layered(({"a": "{{ b }}", "b": "{{ c }}", "c": "{{ a }}"}, True)))


def test_a_value_left_holding_template_text_is_an_error_unless_marked_literal():
    scope = layered(({"raw": "{% raw %}{{ x }}{% endraw %}", "uses": "{{ raw }}!", "safe": unsafe("{# x #}")}, True))
    assert render("{{ raw }}", scope) == "{{ x }}"  # written literal on purpose
    with pytest.raises(TemplateError, match=r"variable 'uses' still holds '\{\{'"):
        render("{{ uses }}", scope)
    assert render("{{ safe }}", scope) == "{# x #}"


@pytest.mark.parametrize(("value", "expected"), [(True, True), ("False", False), ("yes", True), ("NO", False),
                                                 ("on", True), ("0", False), (1, True)])  # fmt: skip
def test_booleans_read_as_ansible_reads_them(value, expected):
    assert as_bool(value, "become") is expected


@pytest.mark.parametrize("value", ["flase", "", None, 2, [True]])
def test_anything_else_is_not_a_boolean(value):
    with pytest.raises(TemplateError, match="become must be a boolean"):
        as_bool(value, "become")


def test_syntax_errors_are_found_by_compiling_without_rendering():
    compile_check({"a": ["{{ fine }}", "{{ undefined_is_fine_here }}"]})
    with pytest.raises(TemplateError, match="Jinja syntax error"):
        compile_check({"a": ["ok", "{{ a | }}"]})


def test_doctor_renders_inventory_templates_too_and_skips_what_needs_facts():
    from fleet.doctor import lenient_defaults

    hostvars = {"project_dir": "/srv/p", "venv": "{{ project_dir }}/.venv", "facts": {}}
    got = lenient_defaults(hostvars, {"venv": "~/x/.venv", "channel": "{{ facts.arch }}", "pyver": "3.12"})
    assert got["venv"] == "/srv/p/.venv" and got["pyver"] == "3.12" and "channel" not in got


def test_a_value_from_a_host_keeps_the_text_around_its_expression():
    """`"{{ facts.arch }}\n"` ends in a newline, as in Ansible (whose copy of `"{{ a }}\n"` writes
    `x\n`), and the value stays unsafe: a `{{` it holds is data, never a leftover template."""
    host_data = {"arch": unsafe("aarch64"), "said": unsafe("{{ not a template }}")}
    assert render("{{ arch }}\n", host_data) == "aarch64\n"
    assert render("  {{ arch }} ", host_data) == "  aarch64 "
    kept = render("{{ said }}\n", host_data)
    assert kept == "{{ not a template }}\n" and isinstance(kept, UnsafeText)
    assert render("{{ arch }}\n", {"arch": "aarch64"}) == "aarch64\n"  # the same as a plain value


def test_jinjas_globals_are_there_whichever_template_comes_first():
    """`range`, `dict`, ... in the first template a fresh process renders (a playbook string, a
    bare expression or a template file builds a different environment first)."""
    import subprocess
    import sys

    code = (
        "from fleet.templating import render, evaluate, render_file\n"
        "first = __import__('sys').argv[1]\n"
        "if first == 'file': print(render_file('{{ range(2) | list }}', {}))\n"
        "if first == 'expression': print(evaluate('1 in range(2)', {}))\n"
        "print(render('{{ range(3) | list }} {{ dict(a=1) }}', {}))\n"
    )
    for first in ("string", "file", "expression"):
        done = subprocess.run([sys.executable, "-c", code, first], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "[0, 1, 2] {'a': 1}", first
