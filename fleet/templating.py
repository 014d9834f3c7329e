"""Jinja2 rendering of task arguments and `when` expressions; undefined variables are errors."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from packaging.version import InvalidVersion, Version


class TemplateError(Exception):
    """A template could not be rendered; the message names the variable or the problem."""


def _version_compare(left: Any, op: str, right: Any) -> bool:
    """`driver is version('>=', '570.148.08')` style comparisons that compare versions, not text."""
    try:
        a, b = Version(str(left)), Version(str(right))
    except InvalidVersion as exc:
        raise TemplateError(f"cannot compare versions {left!r} and {right!r}: {exc}") from None
    ops = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}
    if op not in ops:
        raise TemplateError(f"unknown version operator {op!r}")
    return ops[op]


def _version_test(value: Any, op: str, other: Any) -> bool:
    return _version_compare(value, op, other)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.tests["version"] = _version_test
    env.filters["version_compare"] = lambda a, op, b: _version_compare(a, op, b)
    env.filters["quote"] = __import__("shlex").quote
    env.globals["version_compare"] = _version_compare
    return env


def _explain(exc: Exception) -> str:
    text = str(exc)
    match = re.search(r"'([^']+)' is undefined", text)
    if match:
        return f"undefined variable {match.group(1)!r}"
    if "has no attribute" in text:
        return f"undefined attribute: {text}"
    return text


# Compiled once per run: compiling costs ~30x rendering, and every host renders the same task texts.
@lru_cache(maxsize=1024)
def _template(source: str) -> jinja2.Template:
    return environment().from_string(source)


@lru_cache(maxsize=1024)
def _expression(source: str) -> Any:
    return environment().compile_expression(source, undefined_to_none=False)


_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.S)


def render(value: Any, variables: Mapping[str, Any]) -> Any:
    """Render every string inside value (lists and mappings recursively).

    A string that is one whole `{{ expression }}` giving a list or mapping keeps that type, so
    `packages: "{{ build_packages }}"` passes a list, not its text."""
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        try:
            whole = _WHOLE_EXPRESSION.match(value)
            if whole:
                native = _expression(whole.group("expr").strip())(**variables)
                if isinstance(native, list | tuple | Mapping):
                    return native
            return _template(value).render(variables)
        except (jinja2.UndefinedError, jinja2.TemplateError, TemplateError, TypeError) as exc:
            raise TemplateError(_explain(exc)) from None
    if isinstance(value, Mapping):
        return {k: render(v, variables) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v, variables) for v in value]
    return value


def evaluate(expression: Any, variables: Mapping[str, Any]) -> Any:
    """Evaluate a `when`-style expression (a bare Jinja2 expression, or a bool)."""
    if isinstance(expression, bool):
        return expression
    if isinstance(expression, list | tuple):
        return all(evaluate(e, variables) for e in expression)
    text = str(expression).strip()
    if text.startswith("{{") and text.endswith("}}"):
        text = text[2:-2]
    try:
        result = _expression(text)(**variables)
        if isinstance(result, jinja2.Undefined):
            result._fail_with_undefined_error()
        return result
    except (jinja2.UndefinedError, jinja2.TemplateError, TemplateError, TypeError) as exc:
        raise TemplateError(f"{_explain(exc)} in {str(expression)!r}") from None


def with_defaults(variables: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """variables plus every default they lack, each rendered in order against what is known so far
    (so a default may use host vars, facts and the defaults above it)."""
    merged = dict(variables)
    for name, value in defaults.items():
        if name not in merged:
            try:
                merged[name] = render(value, merged)
            except TemplateError as exc:
                raise TemplateError(f"default {name!r}: {exc}") from None
    return merged
