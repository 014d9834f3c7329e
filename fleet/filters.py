"""The Jinja filters and tests Ansible users write every day, with Ansible's meaning.

Jinja's own `default`/`d`, `join`, `map`, ... are used as they are; these add the rest, and
`unique`, which Ansible makes give a list (Jinja's gives a generator, which rendered as text).
(jinja2-ansible-filters was considered: its last release is from 2022 and it has no tests.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
import yaml


def _error(message: str) -> Exception:
    from .templating import TemplateError

    return TemplateError(message)


def to_bool(value: Any) -> bool:
    """`| bool`: Ansible's reading of yes/no/true/false/on/off/1/0; None is false."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("yes", "on", "1", "true", "y", "t")


def to_json(value: Any, **kwargs: Any) -> str:
    return json.dumps(value, default=str, **kwargs)


def to_nice_json(value: Any, indent: int = 4, sort_keys: bool = True, **kwargs: Any) -> str:
    return json.dumps(value, indent=indent, sort_keys=sort_keys, separators=(",", ": "), default=str, **kwargs)


def from_json(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise _error(f"from_json: not JSON: {exc}") from None


def _plain(value: Any) -> Any:  # our str/dict subclasses dump as plain YAML
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def to_yaml(value: Any, **kwargs: Any) -> str:
    return yaml.safe_dump(_plain(value), allow_unicode=True, default_flow_style=None, **kwargs)


def to_nice_yaml(value: Any, indent: int = 4, **kwargs: Any) -> str:
    return yaml.safe_dump(_plain(value), allow_unicode=True, default_flow_style=False, indent=indent, **kwargs)


def from_yaml(text: Any) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _error(f"from_yaml: not YAML: {exc}") from None


def mandatory(value: Any, msg: str | None = None) -> Any:
    if isinstance(value, jinja2.Undefined):
        name = getattr(value, "_undefined_name", None)
        raise _error(msg or f"mandatory variable {name!r} is not defined")
    return value


def regex_replace(value: Any, pattern: str, replacement: str = "", ignorecase: bool = False, multiline: bool = False,
                  count: int = 0) -> str:  # fmt: skip
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    return re.sub(pattern, replacement, str(value), count=count, flags=flags)


def regex_search(value: Any, pattern: str, *groups: str, ignorecase: bool = False, multiline: bool = False) -> Any:
    r"""The match (or the named/numbered groups `'\1'`, `'\g<name>'` as a list); None if none.
    A group reference of another form is an error, match or not (as in ansible-core)."""
    specs = [re.fullmatch(r"\\(\d+)|\\g<(\w+)>", group) for group in groups]
    for group, spec in zip(groups, specs, strict=True):
        if not spec:
            raise _error(f"regex_search: unknown group reference {group!r} (write \\1 or \\g<name> in the template)")
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    match = re.search(pattern, str(value), flags)
    if not match:
        return None
    if not groups:
        return match.group(0)
    return [match.group(int(s.group(1)) if s.group(1) else s.group(2)) for s in specs if s]


def regex_findall(value: Any, pattern: str, ignorecase: bool = False, multiline: bool = False) -> list[Any]:
    flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
    return re.findall(pattern, str(value), flags)


def b64encode(value: Any, encoding: str = "utf-8") -> str:
    return base64.b64encode(str(value).encode(encoding)).decode("ascii")


def b64decode(value: Any, encoding: str = "utf-8") -> str:
    return base64.b64decode(str(value)).decode(encoding)


def combine(*dicts: Any, recursive: bool = False, list_merge: str = "replace") -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for d in dicts:
        for item in d if isinstance(d, list | tuple) else [d]:
            if not isinstance(item, Mapping):
                raise _error(f"combine: expects mappings, got {type(item).__name__}")
            merged = _merge(merged, item, recursive, list_merge)
    return merged


def _merge(left: Mapping[str, Any], right: Mapping[str, Any], recursive: bool, list_merge: str) -> dict[str, Any]:
    out = dict(left)
    for key, value in right.items():
        old = out.get(key)
        if recursive and isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = _merge(old, value, recursive, list_merge)
        elif isinstance(old, list) and isinstance(value, list) and list_merge != "replace":
            merges = {"keep": old, "append": old + value, "prepend": value + old,
                      "append_rp": [x for x in old if x not in value] + value,
                      "prepend_rp": value + [x for x in old if x not in value]}  # fmt: skip
            if list_merge not in merges:
                raise _error(f"combine: unknown list_merge {list_merge!r}")
            out[key] = merges[list_merge]
        else:
            out[key] = value
    return out


def dict2items(value: Mapping[str, Any], key_name: str = "key", value_name: str = "value") -> list[dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise _error(f"dict2items: expects a mapping, got {type(value).__name__}")
    return [{key_name: k, value_name: v} for k, v in value.items()]


def items2dict(value: list[Mapping[str, Any]], key_name: str = "key", value_name: str = "value") -> dict[str, Any]:
    try:
        return {item[key_name]: item[value_name] for item in value}
    except (KeyError, TypeError) as exc:
        raise _error(f"items2dict: every item needs {key_name!r} and {value_name!r}: {exc}") from None


def flatten(value: Any, levels: int | None = None, skip_nulls: bool = True) -> list[Any]:
    out: list[Any] = []
    for item in value:
        if item is None and skip_nulls:
            continue
        if isinstance(item, list | tuple) and (levels is None or levels > 0):
            out.extend(flatten(item, None if levels is None else levels - 1, skip_nulls))
        else:
            out.append(item)
    return out


def ternary(value: Any, true_val: Any, false_val: Any, none_val: Any = None) -> Any:
    if value is None and none_val is not None:
        return none_val
    return true_val if value else false_val


def hash_filter(value: Any, algorithm: str = "sha1") -> str:
    try:
        digest = hashlib.new(algorithm)
    except ValueError:
        raise _error(f"hash: unknown algorithm {algorithm!r}") from None
    digest.update(str(value).encode())
    return digest.hexdigest()


_OPERATORS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "==": "==", "!=": "!=",
              "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}  # fmt: skip


def version_compare(left: Any, first: Any, second: Any = ">=", operator: str | None = None) -> bool:
    """`driver is version('570.148.08', '>=')` compares versions, not text. fleet's older order
    `version('>=', '570.148.08')` is read too: the operator is whichever argument is one."""
    other, op = (second, first) if str(first) in _OPERATORS else (first, operator or second)
    if str(op) not in _OPERATORS:
        raise _error(f"unknown version operator {op!r}")
    from packaging.version import InvalidVersion, Version  # only here: most templates compare no versions

    try:
        a, b = Version(str(left)), Version(str(other))
    except InvalidVersion as exc:
        raise _error(f"cannot compare versions {left!r} and {other!r}: {exc}") from None
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[_OPERATORS[str(op)]]


@jinja2.pass_environment
def unique(environment: Any, value: Any, case_sensitive: bool = False, attribute: Any = None) -> list[Any]:
    """Jinja's `unique` (first of each, in order) as a list, as Ansible's is."""
    from jinja2.filters import do_unique

    return list(do_unique(environment, value, case_sensitive=case_sensitive, attribute=attribute))


def _result(value: Any, key: str) -> bool:
    if not isinstance(value, Mapping):
        raise _error(f"the {key} test needs a registered task result, got {type(value).__name__}")
    return bool(value.get(key, False))


def _regex_test(kind: str) -> Callable[..., bool]:
    def test(value: Any, pattern: str, ignorecase: bool = False, multiline: bool = False) -> bool:
        flags = (re.I if ignorecase else 0) | (re.M if multiline else 0)
        return bool(getattr(re, kind)(pattern, str(value), flags))

    return test


FILTERS: dict[str, Callable[..., Any]] = {
    "bool": to_bool,
    "to_json": to_json,
    "to_nice_json": to_nice_json,
    "from_json": from_json,
    "to_yaml": to_yaml,
    "to_nice_yaml": to_nice_yaml,
    "from_yaml": from_yaml,
    "mandatory": mandatory,
    "regex_replace": regex_replace,
    "regex_search": regex_search,
    "regex_findall": regex_findall,
    "b64encode": b64encode,
    "b64decode": b64decode,
    "basename": os.path.basename,
    "dirname": os.path.dirname,
    "expanduser": os.path.expanduser,
    "combine": combine,
    "dict2items": dict2items,
    "items2dict": items2dict,
    "flatten": flatten,
    "unique": unique,
    "ternary": ternary,
    "quote": lambda value: shlex.quote(str(value)),
    "hash": hash_filter,
    "version_compare": version_compare,
}

TESTS: dict[str, Callable[..., bool]] = {
    "succeeded": lambda r: not _result(r, "failed"),
    "success": lambda r: not _result(r, "failed"),
    "failed": lambda r: _result(r, "failed"),
    "failure": lambda r: _result(r, "failed"),
    "changed": lambda r: _result(r, "changed"),
    "change": lambda r: _result(r, "changed"),
    "skipped": lambda r: _result(r, "skipped"),
    "skip": lambda r: _result(r, "skipped"),
    "match": _regex_test("match"),
    "search": _regex_test("search"),
    "version": version_compare,
    "version_compare": version_compare,
}
