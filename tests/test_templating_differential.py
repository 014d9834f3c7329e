"""fleet's templating against ansible-core's, the oracle: the same template strings, the same
variables, rendered by fleet (fleet/templating.py, fleet/filters.py) and by ansible-core's own
Templar; template files by ansible-core's `template` module, run for real on localhost.

A variable's value keeps the type its expression gives, as ansible-core 2.19 keeps it; a task
argument's scalar becomes text that the argument's type reads again (`mode: "{{ m }}"`), the one
deliberate difference asserted below with the others (see the README's table)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from fleet.templating import TemplateError, condition, evaluate, layered, render, render_file

pytest.importorskip("ansible")

VARIABLES: dict[str, Any] = {
    "s": "text", "word_yes": "yes", "word_off": "off", "one": "1", "zero": 0, "n": None, "f": 3.5, "i": 7,
    "l": [3, 1, 3, 2], "nested": [[1, [2]], 3], "d": {"b": 1, "a": {"x": 1}}, "d2": {"a": {"y": 2}, "c": [1]},
    "path": "/opt/venv/bin/python3", "ver": "580.159.04", "old": "570.86.15",
    "items": [{"key": "A", "value": 1}, {"key": "B", "value": 2}],
    "ok": {"rc": 0, "changed": False, "failed": False}, "bad": {"rc": 1, "changed": True, "failed": True},
    "skip": {"skipped": True, "changed": False}, "quoted": "it's a $HOME", "names": ["b", "A", "a", "B"],
    "yaml_text": "a: 1\nb: [x, y]\n", "json_text": '{"k": [1, 2]}', "b64": "aGVsbG8=", "empty": "",
    "unicode": "ünï", "multi": "line1\nline2\n", "windows": "C:\\Users\\x",
}  # fmt: skip

# Every filter and test the README lists, whole expressions of every type, text around them,
# None, Jinja blocks, and backslashes in string literals (ansible-core keeps them inside `{{ }}`).
TEMPLATES = [
    "{{ s }}", "{{ s }}\n", "pre {{ s }} post", "{{ i }}", "{{ i }}\n", "{{ f }}", "{{ n }}", "x{{ n }}x", "{{ l }}",
    "{{ d }}", "{{ l }}{{ l }}", "[{{ l }}]", "{{ i + 1 }}", "{{ i / 2 }}", "{{ i // 2 }}", "{{ '%05d' % i }}",
    "{{ word_yes | bool }}", "{{ word_off | bool }}", "{{ one | bool }}", "{{ zero | bool }}", "{{ 'TRUE' | bool }}",
    "{{ d | to_json }}", "{{ d | to_nice_json }}", "{{ d | to_yaml }}", "{{ d | to_nice_yaml }}", "{{ l | to_json }}",
    "{{ json_text | from_json }}", "{{ yaml_text | from_yaml }}", "{{ (json_text | from_json).k[1] }}",
    "{{ missing | default('dflt') }}", "{{ missing | d('dflt') }}", "{{ empty | default('e', true) }}",
    "{{ n | default('x') }}", "{{ s | mandatory }}",
    "{{ path | regex_replace('python3$', 'pip') }}", r"{{ path | regex_search('bin/(\w+)') }}",
    r"{{ path | regex_search('bin/(\w+)', '\1') }}", r"{{ ver | regex_findall('\d+') }}",
    r"{{ 'v1.2.3' | regex_replace('^v(\d+)\..*', '\1') }}", r"{{ 'ab-12' | regex_replace('(a)b', '\1X') }}",
    r"{{ 'a\\b' | length }}", r"{{ 'a\tb' }}", r"{{ 'a\'b' }}", r"{{ '\u00fc' }}", r"x\y {{ 'a\\b' }}",
    r"{% set x = 'a\\b' %}[{{ x | length }}]", r"{% if 'a\\b' | length == 4 %}four{% else %}three{% endif %}",
    "{{ windows }}", "{{ windows | length }}",
    "{{ 'hello' | b64encode }}", "{{ b64 | b64decode }}", "{{ unicode | b64encode }}",
    "{{ path | basename }}", "{{ path | dirname }}",
    "{{ d | combine(d2) }}", "{{ d | combine(d2, recursive=true) }}",
    "{{ {'a': [1]} | combine({'a': [2]}, list_merge='append') }}",
    "{{ d | dict2items }}", "{{ items | items2dict }}", "{{ nested | flatten }}", "{{ nested | flatten(levels=1) }}",
    "{{ l | unique }}", "{{ names | unique }}", "{{ names | unique(case_sensitive=true) }}",
    "{{ (i > 3) | ternary('big', 'small') }}", "{{ quoted | quote }}", "{{ s | hash('sha1') }}",
    "{{ s | hash('md5') }}",
    "{{ ok is succeeded }}", "{{ bad is failed }}", "{{ bad is changed }}", "{{ skip is skipped }}",
    "{{ ok is failed }}", "{{ s is match('te') }}", "{{ s is search('x') }}", "{{ s is match('x') }}",
    r"{{ ver is match('\d+\.') }}",
    "{{ ver is version('570.148.08', '>=') }}", "{{ old is version('570.148.08', '>=') }}",
    "{{ '570.148.08' is version('570.99', '>') }}",
    "{{ l | length }}", "{{ l | sort }}", "{{ l | max }}", "{{ l | sum }}", "{{ l | join(',') }}", "{{ s | upper }}",
    "{{ l | map('string') | list }}", "{{ items | map(attribute='key') | list }}", "{{ names | map('lower') }}",
    "x {{ names | map('lower') }}", "{{ names | select('equalto', 'b') }}", "{{ names | reverse }}",
    "{{ d.keys() }}", "{{ d.items() }}", "{{ d.values() | list }}",
    "{{ items | selectattr('value', 'gt', 1) | list }}",
    "{% if i > 3 %}big{% else %}small{% endif %}", "{% for x in l %}{{ x }},{% endfor %}", "{{ multi }}",
    "{{ s ~ i }}", "{{ d.a.x }}", "{{ d['b'] }}", "{{ l[0] }}", "{{ l[-1] }}", "{{ s[1:3] }}", "{{ 'a' in s }}",
    "{{ true }}", "{{ [1, 2] }}", "{{ {'k': 'v'} }}", "{{ none }}", "{{ [n] }}", "{{ n | string }}", "{{ 1 == 1.0 }}",
]  # fmt: skip

# Strings whose rendering is an error for both (the messages differ; both name the problem).
ERRORS = [
    "{{ undefined_x }}", "{{ d.nope }}", "{{ missing | mandatory }}", r"{{ path | regex_search('(x)', '\\1') }}",
    "{{ s + 1 }}", "{{ '{{' }",
]  # fmt: skip

# Bare expressions (`when:`, `changed_when:`, `assert: that:`): string literals as Jinja reads them.
EXPRESSIONS = [
    "i > 3", "s == 'text'", "n is none", "l | length == 4", "ok is succeeded", "bad is failed",
    r"s is match('t\w+')", r"'a\\b' | length == 3", "ver is version('570.148.08', '>=')", "word_yes | bool",
    "'x' in l", "missing is defined", "missing is undefined", "d.a.x == 1", "not (zero | bool)",
    "names | select('equalto', 'z')", "names | select('equalto', 'b')",
]  # fmt: skip


def plain(value: Any) -> Any:
    """A value without ansible-core's tagged types (its dict and str subclasses), for ==."""
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def as_argument(value: Any) -> Any:
    """What fleet gives a task argument for ansible-core's value of a whole expression: collections
    and None as they are, any other scalar as its text (the argument's own type reads it again)."""
    if value is None or isinstance(value, list | tuple | Mapping):
        return value
    return str(value)


@pytest.fixture(scope="module")
def templar():
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    oracle = Templar(loader=DataLoader(), variables=VARIABLES)

    class Oracle:
        def render(self, text: str) -> Any:
            return oracle.template(trust_as_template(text))

        def evaluate(self, expression: str) -> Any:
            return oracle.evaluate_expression(trust_as_template(expression))

    return Oracle()


@pytest.mark.parametrize("text", TEMPLATES)
def test_a_variables_value_is_what_ansible_core_renders(templar, text):
    expected = plain(templar.render(text))
    got = render(text, VARIABLES, native=True)
    assert (plain(got), type(plain(got))) == (expected, type(expected))


# A task argument keeps the text written around a number (ansible-core drops a trailing newline
# there along with the text: `content: "{{ port }}\n"` would write no newline).
ARGUMENT_TEXT = {"{{ i }}\n": "7\n"}


@pytest.mark.parametrize("text", TEMPLATES)
def test_a_task_argument_is_ansible_cores_value_with_scalars_as_text(templar, text):
    expected = ARGUMENT_TEXT.get(text, as_argument(plain(templar.render(text))))
    assert plain(render(text, VARIABLES)) == expected


@pytest.mark.parametrize("text", ERRORS)
def test_what_ansible_core_refuses_fleet_refuses(templar, text):
    with pytest.raises(Exception):  # noqa: B017  # ansible-core's own error classes
        templar.render(text)
    with pytest.raises(TemplateError):
        render(text, VARIABLES, native=True)


@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_a_bare_expression_is_what_ansible_core_evaluates(templar, expression):
    assert plain(evaluate(expression, VARIABLES)) == plain(templar.evaluate(expression))


# Conditionals (`when:`, `until:`, `changed_when:`, `failed_when:`, `assert: that:`) must give true or
# false. ansible-core 2.19 refuses anything else ("broken conditional"), and so does fleet: the
# quoted "false" of a YAML file or an inventory must never run a task by being non-empty text.
CONDITIONS = ["word_off", "s", "empty", "zero", "i", "l", "n", "d", "one"]


@pytest.mark.parametrize("expression", CONDITIONS)
def test_a_condition_that_is_not_true_or_false_is_refused_as_ansible_core_refuses_it(expression):
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    with pytest.raises(Exception, match="Conditional result"):
        Templar(loader=DataLoader(), variables=VARIABLES).evaluate_conditional(trust_as_template(expression))
    with pytest.raises(TemplateError, match=r"not true or false; compare it, or write `\| bool`"):
        condition(expression, VARIABLES)


def test_a_refused_condition_shows_at_most_the_start_of_a_long_value():
    with pytest.raises(TemplateError) as refused:
        condition("big", {"big": list(range(10_000))}, "until")
    message = str(refused.value)
    assert message.startswith("until: 'big' gives list [0, 1, 2, ") and "…, not true or false" in message
    assert len(message) < 250


@pytest.mark.parametrize("expression", ["word_off | bool", "l | length > 0", "n is none", "i > 3", "not (one | bool)"])
def test_a_condition_that_is_true_or_false_is_what_ansible_core_decides(expression):
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    oracle = Templar(loader=DataLoader(), variables=VARIABLES)
    assert condition(expression, VARIABLES) is oracle.evaluate_conditional(trust_as_template(expression))


def test_variables_built_from_expressions_keep_their_types_through_later_templates(templar):
    """`n: "{{ i + 1 }}"` then `{{ n * 2 }}`: a number doubled, not the text "8" repeated; a
    false expression is false, not the true-looking text "False"."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    defined = {"i": 7, "n": "{{ i + 1 }}", "small": "{{ i > 30 }}", "none_of_it": "{{ nothing }}", "nothing": None}
    trusted = {k: trust_as_template(v) if isinstance(v, str) else v for k, v in defined.items()}
    oracle = Templar(loader=DataLoader(), variables=trusted)
    scope = layered((defined, True))
    for text in ("{{ n * 2 }}", "{{ n + 1 }}", "{% if small %}yes{% else %}no{% endif %}", "{{ none_of_it is none }}"):
        assert plain(render(text, scope, native=True)) == plain(oracle.template(trust_as_template(text))), text
    for expression in ("n > 7", "not small", "none_of_it is none"):
        assert evaluate(expression, scope) is True is oracle.evaluate_expression(trust_as_template(expression))


def test_a_playbooks_regex_group_survives_yaml_and_jinja_as_in_ansible_core(templar):
    """The everyday idiom: a double-quoted YAML string with `'\\\\1'`. YAML leaves `'\\1'` and
    ansible-core keeps that backslash inside `{{ }}`, so it is the regex group; Jinja's own
    unescaping made it the character chr(1), which fleet wrote to files before."""
    task = yaml.safe_load(r"""
major: "{{ ver | regex_replace('^(\\d+)\\..*', '\\1') }}"
swapped: "{{ 'ab' | regex_replace('(a)(b)', '\\2\\1') }}"
windows: "{{ 'C:\\new' }}"
""")  # fmt: skip
    for key, text in task.items():
        assert render(text, VARIABLES) == plain(templar.render(text)), key
    assert render(task["major"], VARIABLES) == "580"


def test_the_deliberate_differences_stay_as_documented(templar):
    # A whole expression with spaces around keeps its type in fleet; ansible-core makes it text.
    assert render(" {{ l }} ", VARIABLES) == [3, 1, 3, 2] and templar.render(" {{ l }} ") == " [3, 1, 3, 2] "
    # Two Nones side by side: text in fleet (empty), None in ansible-core.
    assert render("{{ n }}{{ n }}", VARIABLES) == "" and templar.render("{{ n }}{{ n }}") is None
    # A template with `{% %}` blocks gives text in fleet; ansible-core gives the one value it printed.
    block = "{% if true %}{{ l }}{% endif %}"
    assert render(block, VARIABLES, native=True) == "[3, 1, 3, 2]" and templar.render(block) == [3, 1, 3, 2]
    # A range is the list it stands for; ansible-core refuses the type.
    assert render("{{ range(3) }}", VARIABLES) == [0, 1, 2]
    with pytest.raises(Exception):  # noqa: B017  # ansible-core's own error class
        templar.render("{{ range(3) }}")
    # Text around a number stays in a task argument (see ARGUMENT_TEXT); a variable gets the number.
    assert render("{{ i }}\n", VARIABLES) == "7\n" and render("{{ i }}\n", VARIABLES, native=True) == 7


def test_a_template_file_renders_as_ansible_cores_template_module_writes_it(tmp_path):
    """Template files read string literals as Jinja does (no backslash rule), print None inside
    text as nothing, and keep a final newline: ansible-core's `template` module, run on localhost."""
    ansible = shutil.which("ansible") or "ansible"
    source = tmp_path / "node.conf.j2"
    source.write_text(
        "node = {{ s }}\n"
        r"group = {{ 'ab' | regex_replace('(a)', '\\1X') }}" "\n"
        r"length = {{ 'a\\b' | length }}" "\n"
        "none = [{{ n }}]\n"
        "{% for x in l | unique %}item {{ x }}\n{% endfor %}"
        "json = {{ d | to_json }}\n"
        "end\n"
    )  # fmt: skip
    (tmp_path / "vars.json").write_text(json.dumps(VARIABLES))
    dest = tmp_path / "by-ansible.conf"
    done = subprocess.run(
        [ansible, "localhost", "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
         "-e", f"@{tmp_path / 'vars.json'}", "-m", "template", "-a", f"src={source} dest={dest}"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "ANSIBLE_LOCALHOST_WARNING": "0"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert render_file(source.read_text(), VARIABLES) == dest.read_text()
    assert "group = aXb\n" in dest.read_text() and "length = 3\n" in dest.read_text()
