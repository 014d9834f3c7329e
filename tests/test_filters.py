"""The Ansible filters and tests in fleet/filters.py: one case (or more) per filter, through Jinja."""

from __future__ import annotations

import hashlib

import pytest

from fleet.templating import TemplateError, evaluate

CASES = [
    ("'yes' | bool", True),
    ("'False' | bool", False),
    ("None | bool", False),
    ("{'a': [1, 'x']} | to_json", '{"a": [1, "x"]}'),
    ("{'b': 1, 'a': 2} | to_nice_json", '{\n    "a": 2,\n    "b": 1\n}'),
    ("'{\"a\": [1, 2]}' | from_json", {"a": [1, 2]}),
    ("{'a': [1, 2]} | to_yaml", "a: [1, 2]\n"),
    ("{'a': {'b': 1}} | to_nice_yaml", "a:\n    b: 1\n"),
    ("'a: [1, 2]\\nb: x' | from_yaml", {"a": [1, 2], "b": "x"}),
    ("missing | default('d')", "d"),
    ("missing | d(7)", 7),
    ("'' | default('e', true)", "e"),
    ("here | mandatory", 1),
    ("'gh200-01.lab' | regex_replace('\\\\.lab$', '')", "gh200-01"),
    ("'GH200-01' | regex_replace('gh', 'x', ignorecase=true)", "x200-01"),
    ("'driver 570.148.08' | regex_search('[0-9.]+')", "570.148.08"),
    ("'k=v' | regex_search('(?P<k>\\\\w)=(\\\\w)', '\\\\g<k>', '\\\\2')", ["k", "v"]),
    ("'none' | regex_search('[0-9]')", None),
    ("'a1b22' | regex_findall('[0-9]+')", ["1", "22"]),
    ("'fleet' | b64encode", "ZmxlZXQ="),
    ("'ZmxlZXQ=' | b64decode", "fleet"),
    ("'/opt/venv/bin/python' | basename", "python"),
    ("'/opt/venv/bin/python' | dirname", "/opt/venv/bin"),
    ("{'a': 1, 'n': {'x': 1}} | combine({'n': {'y': 2}})", {"a": 1, "n": {"y": 2}}),
    ("{'a': 1, 'n': {'x': 1}} | combine({'n': {'y': 2}}, recursive=true)", {"a": 1, "n": {"x": 1, "y": 2}}),
    ("{'l': [1]} | combine({'l': [2]}, list_merge='append')", {"l": [1, 2]}),
    ("{'a': 1} | dict2items", [{"key": "a", "value": 1}]),
    ("[{'name': 'a', 'v': 1}] | items2dict(key_name='name', value_name='v')", {"a": 1}),
    ("[1, [2, [3, [4]]], None] | flatten", [1, 2, 3, 4]),
    ("[1, [2, [3]]] | flatten(levels=1)", [1, 2, [3]]),
    ("[3, 1, 3, 2] | unique | list", [3, 1, 2]),
    ("true | ternary('on', 'off')", "on"),
    ("None | ternary('on', 'off', 'unset')", "unset"),
    ('"it\'s" | quote', "'it'\"'\"'s'"),
    ("'fleet' | hash", hashlib.sha1(b"fleet").hexdigest()),
    ("'fleet' | hash('sha256')", hashlib.sha256(b"fleet").hexdigest()),
    ("ok is succeeded and ok is success and bad is failed and bad is failure", True),
    ("bad is succeeded or ok is failed", False),
    ("ch is changed and ch is change and sk is skipped and sk is skip and ok is not changed", True),
    ("'gh200-01' is match('gh200') and not ('xgh200' is match('gh200'))", True),
    ("'xgh200' is search('gh2')", True),
    ("'580.159.04' is version('570.148.08', '>=')", True),
    ("'570.86.15' is version('570.148.08', 'ge')", False),
    ("'12.8' is version('>=', '12.10')", False),  # fleet's older argument order reads the same
    ("'1.2' | version_compare('1.10', '<')", True),
]

SCOPE = {
    "here": 1,
    "ok": {"failed": False, "changed": False},
    "bad": {"failed": True, "changed": False},
    "ch": {"failed": False, "changed": True},
    "sk": {"skipped": True},
}


@pytest.mark.parametrize(("expression", "expected"), CASES)
def test_filter_or_test(expression, expected):
    assert evaluate(expression, SCOPE) == expected


def test_expanduser_expands_home(monkeypatch):
    monkeypatch.setenv("HOME", "/home/fleet")
    assert evaluate("'~/x' | expanduser", {}) == "/home/fleet/x"


@pytest.mark.parametrize(
    ("expression", "needle"),
    [
        ("nothing | mandatory", "mandatory variable 'nothing' is not defined"),
        ("nothing | mandatory('set nothing in group_vars')", "set nothing in group_vars"),
        ("'x' | from_json", "from_json: not JSON"),
        ("'x' | hash('nohash')", "hash: unknown algorithm"),
        ("'x' | combine(1)", "combine: expects mappings"),
        ("'1' is version('2', '=~')", "unknown version operator"),
        ("'1' is succeeded", "needs a registered task result"),
    ],
)
def test_filter_errors_are_one_line_template_errors(expression, needle):
    with pytest.raises(TemplateError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        evaluate(expression, {})
