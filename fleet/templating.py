"""Jinja2 rendering of variables, task arguments and `when` expressions, as Ansible does it.

Variables are templated lazily and recursively: a variable's value is rendered the first time a
template uses it, against the same variables, wherever it was written (play vars, defaults,
inventory, vars_files, -e). A cycle (a -> b -> a) is an error naming the chain, and a value that
still holds `{{`, `{%` or `{#` after rendering is an error naming the variable, so template text
never reaches a host. Data that came from hosts (registered results, facts) is never templated.
A variable keeps the type its expression gives; inside `{{ }}` of a playbook string a string
literal keeps its backslashes (see playbook_environment); tests/test_templating_differential.py
holds both, and the rest, against ansible-core's own Templar.
Jinja2 is imported when the first template is compiled or rendered, not before: a playbook, a
variable lookup or a command without one never loads it.
"""

from __future__ import annotations

import re
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

MARKERS = ("{{", "{%", "{#")
BOOLEANS_TRUE = frozenset({"y", "yes", "on", "1", "true", "t"})
BOOLEANS_FALSE = frozenset({"n", "no", "off", "0", "false", "f"})


class TemplateError(Exception):
    """A template could not be rendered; the message names the variable or the problem."""


class UnsafeText(str):
    """Text from a host (a registered result, a fact): used as it is, never rendered."""


def unsafe(value: Any) -> Any:
    """value with every string in it marked as data, not template (Ansible's `!unsafe`)."""
    if isinstance(value, str):
        return UnsafeText(value)
    if isinstance(value, Mapping):
        return {k: unsafe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [unsafe(v) for v in value]
    return value


def is_template(value: Any) -> bool:
    return isinstance(value, str) and not isinstance(value, UnsafeText) and any(m in value for m in MARKERS)


def has_template(value: Any) -> bool:
    """Whether a template hides anywhere in value (strings inside lists and mappings too)."""
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, Mapping):
        return any(has_template(k) or has_template(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_template(v) for v in value)
    return False


def as_bool(value: Any, what: str) -> bool:
    """A keyword's boolean, as Ansible reads it: true/false, yes/no, on/off, 1/0 (any case).
    Anything else is an error, never truthiness (`"false"` is not true)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in BOOLEANS_TRUE:
            return True
        if word in BOOLEANS_FALSE:
            return False
    raise TemplateError(f"{what} must be a boolean (true/false, yes/no), got {value!r}")


def _materialized(value: Any) -> Any:
    """A lazy sequence as the list it stands for, as ansible-core gives it: `map`, `select`,
    `reverse`, `.keys()`, `.items()` (as [key, value] lists), `range(n)`. Never the text
    `<generator object ...>` in a file or an argument."""
    if isinstance(value, ItemsView):
        return [list(pair) for pair in value]
    if isinstance(value, Iterator | KeysView | ValuesView | range):
        return list(value)
    return value


def _printed(value: Any) -> Any:
    """What `{{ x }}` prints inside text: nothing for None, as ansible-core 2.19 does (`x{{ none }}x`
    gives `xx`; a whole expression still gives None itself), and a lazy sequence as its list."""
    return "" if value is None else _materialized(value)


def _configured(env: jinja2.Environment) -> jinja2.Environment:
    from .filters import FILTERS, TESTS

    env.filters.update(FILTERS)
    env.tests.update(TESTS)
    env.globals["version_compare"] = FILTERS["version_compare"]
    return env


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """Jinja as template files and bare `when`-style expressions are read, string literals
    unescaped as Jinja unescapes them (ansible-core reads those two the same way)."""
    import jinja2

    return _configured(
        jinja2.Environment(
            undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False, finalize=_printed
        )
    )


@lru_cache(maxsize=1)
def playbook_environment() -> jinja2.Environment:
    r"""Jinja as strings of a playbook or inventory are read (arguments, vars, keywords): inside
    `{{ }}` a string literal keeps its backslashes as written, as ansible-core reads them. YAML
    has already taken one level of escapes, so `"{{ v | regex_replace('(a)', '\1') }}"` in a
    playbook means the regex group \1, never the character chr(1). `{% %}` blocks, template files
    and bare expressions unescape literals as Jinja does."""
    import functools

    import jinja2
    from jinja2.lexer import TOKEN_STRING, TOKEN_VARIABLE_BEGIN, TOKEN_VARIABLE_END, Lexer

    class PlaybookLexer(Lexer):
        def tokeniter(self, source: str, name: Any, filename: Any = None, state: Any = None) -> Any:
            inside = state == "variable"  # a whole expression is compiled on its own, already inside
            for lineno, token, value in super().tokeniter(source, name, filename, state):
                if token == TOKEN_VARIABLE_BEGIN:
                    inside = True
                elif token == TOKEN_VARIABLE_END:
                    inside = False
                elif token == TOKEN_STRING and inside:
                    value = value.replace("\\", "\\\\")  # Jinja's unescaping then gives the text as written
                yield lineno, token, value

    class PlaybookEnvironment(jinja2.Environment):
        @functools.cached_property
        def lexer(self) -> Lexer:  # type: ignore[override]
            return PlaybookLexer(self)

    return _configured(
        PlaybookEnvironment(
            undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False, finalize=_printed
        )
    )


def _explain(exc: Exception) -> str:
    text = str(exc)
    match = re.search(r"'([^']+)' is undefined", text)
    if match:
        return f"undefined variable {match.group(1)!r}"
    if "has no attribute" in text:
        return f"undefined attribute: {text}"
    return text


def compile_check(value: Any) -> None:
    """Compile every template in value (strings in lists and mappings too): a syntax error is a
    TemplateError now, at load time, not when the task reaches a host."""
    if is_template(value):
        import jinja2

        try:
            _template(value)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"Jinja syntax error in {value!r}: {exc.message}") from None
    elif isinstance(value, Mapping):
        for v in value.values():
            compile_check(v)
    elif isinstance(value, list | tuple):
        for v in value:
            compile_check(v)


def compile_expression_check(expression: Any) -> None:
    """Like compile_check, for a bare `when`-style expression."""
    if isinstance(expression, list | tuple):
        for e in expression:
            compile_expression_check(e)
    elif isinstance(expression, str):
        import jinja2

        try:
            _expression(_bare(expression))
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"Jinja syntax error in {expression!r}: {exc.message}") from None


def compile_file(path: Any) -> None:
    """Compile a template file: a syntax error names the file and line."""
    import jinja2

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"template {path}: cannot read it: {exc}") from None
    try:
        _file_template(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template {path}:{exc.lineno}: Jinja syntax error: {exc.message}") from None


# Compiled once per run: compiling costs ~30x rendering, and every host renders the same task texts.
@lru_cache(maxsize=4096)
def _template(source: str) -> jinja2.Template:
    return playbook_environment().from_string(source)


@lru_cache(maxsize=256)
def _file_template(source: str) -> jinja2.Template:
    return environment().from_string(source)


@lru_cache(maxsize=4096)
def _expression(source: str, playbook: bool = False) -> Any:
    """A bare expression (`when:`), or with `playbook` the inside of a string's whole `{{ }}`."""
    env = playbook_environment() if playbook else environment()
    return env.compile_expression(source, undefined_to_none=False)


class Watch:
    """Names whose every read is noted: values not known yet, which a template may read without
    failing (`| default`, `is defined`), so only a read that never happened proves it unused."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        self.read = False


class Variables(Mapping[str, Any]):
    """One host's variables for one task, rendered on first use (see the module's docstring).

    `templated` values are rendered; `data` values (magic variables, facts, registered results,
    loop items) are used as they are and win over templated ones of the same name."""

    def __init__(
        self, templated: Mapping[str, Any], data: Mapping[str, Any] | None = None, watch: Watch | None = None
    ) -> None:
        self._templated = templated
        self._data = dict(data or {})
        self._rendered: dict[str, Any] = {}
        self._rendering: list[str] = []
        self._watch = watch

    def child(self, **data: Any) -> Variables:
        """The same variables plus data (a loop's `item`, a task's `result`)."""
        return Variables(self._templated, {**self._data, **data}, self._watch)

    def __getitem__(self, name: str) -> Any:
        if name in self._data:
            if self._watch is not None and name in self._watch.names:
                self._watch.read = True
            return self._data[name]
        if name in self._rendered:
            return self._rendered[name]
        if name not in self._templated:
            if name in _jinja_globals():
                return _jinja_globals()[name]
            raise KeyError(name)
        if name in self._rendering:
            chain = [*self._rendering[self._rendering.index(name) :], name]
            raise TemplateError(f"variable cycle: {' -> '.join(chain)}")
        raw = self._templated[name]
        self._rendering.append(name)
        try:
            value = render(raw, self, native=True)
        except TemplateError as exc:
            if str(exc).startswith("variable cycle"):
                raise
            raise TemplateError(f"variable {name!r}: {exc}") from None
        finally:
            self._rendering.pop()
        leftover = _leftover(value, raw)
        if leftover:
            raise TemplateError(
                f"variable {name!r} still holds {leftover!r} after rendering; a template's text must not reach a "
                "host (mark literal text with {% raw %} or !unsafe)"
            )
        self._rendered[name] = value
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._data or name in self._templated or name in _jinja_globals()

    def __iter__(self) -> Iterator[str]:
        return iter({**self._templated, **self._data})

    def __len__(self) -> int:
        return len({**self._templated, **self._data})


def _jinja_globals() -> Mapping[str, Any]:
    """Jinja's globals (range, dict, ..., version_compare), which templates see among the variables.
    Only a template uses them, and rendering one has built the environment already: a plain
    lookup before that (become, command_timeout) needs no Jinja."""
    for built in (playbook_environment, environment):  # the same globals in both
        if built.cache_info().currsize:
            return built().globals
    return {}


def layered(*layers: tuple[Mapping[str, Any] | None, bool], watch: Watch | None = None) -> Variables:
    """Variables from (mapping, templated) layers, lowest precedence first."""
    templated: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for mapping, is_templated in layers:
        for key, value in (mapping or {}).items():
            (templated if is_templated else data)[key] = value
            (data if is_templated else templated).pop(key, None)
    return Variables(templated, data, watch)


def _leftover(value: Any, source: Any) -> str | None:
    """The template marker a rendered value still holds (None if none, or the source meant it)."""
    if isinstance(value, UnsafeText):
        return None
    if isinstance(value, str):
        if isinstance(source, str) and "{% raw" in source.replace("{%- raw", "{% raw"):
            return None
        return next((m for m in MARKERS if m in value), None)
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _leftover(item, source.get(key) if isinstance(source, Mapping) else None)
            if found:
                return found
    if isinstance(value, list | tuple):
        sources = (
            list(source) if isinstance(source, list | tuple) and len(source) == len(value) else [None] * len(value)
        )
        for item, src in zip(value, sources, strict=True):
            found = _leftover(item, src)
            if found:
                return found
    return None


def _variables(variables: Mapping[str, Any]) -> Variables:
    return variables if isinstance(variables, Variables) else Variables({}, variables)


_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.S)


def _run_expression(source: str, variables: Variables, playbook: bool = False) -> Any:
    from jinja2.utils import consume

    template = _expression(source, playbook)._template  # TemplateExpression copies its variables; ours are lazy
    context = template.new_context(variables, shared=True)
    consume(template.root_render_func(context))
    return context.vars["result"]


def render(value: Any, variables: Mapping[str, Any], *, native: bool = False) -> Any:
    """Render every string inside value (lists and mappings recursively), as a playbook's.

    A string that is one whole `{{ expression }}` giving a list, a mapping or None gives that
    itself, so `packages: "{{ build_packages }}"` passes a list, not its text. Other values
    become text (task arguments: each field's type then reads it), unless `native`: a variable's
    value keeps its type (`n: "{{ i + 1 }}"` is a number, `{{ n * 2 }}` arithmetic, not repetition;
    `f: "{{ i > 9 }}"` is false, never the true-looking text "False"), as in ansible-core 2.19."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        import jinja2

        scope = _variables(variables)
        try:
            whole = _WHOLE_EXPRESSION.match(value)
            if whole:
                result = _materialized(_run_expression(whole.group("expr").strip(), scope, playbook=True))
                if isinstance(result, jinja2.Undefined):
                    result._fail_with_undefined_error()
                if result is None or isinstance(result, list | tuple | Mapping):
                    return result
                if isinstance(result, UnsafeText):  # data from a host stays unsafe, with the text around it
                    return UnsafeText(value[: whole.start("expr") - 2] + result + value[whole.end("expr") + 2 :])
                if native and not isinstance(result, str):
                    return result
            return _rendered(_template(value), scope)
        except (jinja2.UndefinedError, jinja2.TemplateError, TypeError) as exc:
            raise TemplateError(_explain(exc)) from None
    if isinstance(value, Mapping):
        return {k: render(v, variables, native=native) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v, variables, native=native) for v in value]
    return value


def render_file(text: str, variables: Mapping[str, Any]) -> str:
    """A template file's text, rendered (always text; string literals as Jinja reads them)."""
    import jinja2

    try:
        return _rendered(_file_template(text), _variables(variables))
    except (jinja2.UndefinedError, jinja2.TemplateError, TypeError) as exc:
        raise TemplateError(_explain(exc)) from None


def _rendered(template: jinja2.Template, scope: Variables) -> str:
    """A template's text against lazy variables (shared: Jinja copies nothing into a new dict)."""
    return template.environment.concat(template.root_render_func(template.new_context(scope, shared=True)))


def render_argument(value: Any, variables: Mapping[str, Any], what: str) -> Any:
    """render(), then make sure no template text is left to reach a host."""
    rendered = render(value, variables)
    leftover = _leftover(rendered, value)
    if leftover:
        raise TemplateError(f"{what} still holds {leftover!r} after rendering; a template's text must not reach a host")
    return rendered


def _bare(expression: str) -> str:
    text = expression.strip()
    if text.startswith("{{") and text.endswith("}}"):
        text = text[2:-2]
    return text.strip()


def evaluate(expression: Any, variables: Mapping[str, Any]) -> Any:
    """Evaluate a `when`-style expression (a bare Jinja2 expression, or a bool)."""
    if isinstance(expression, bool):
        return expression
    if isinstance(expression, list | tuple):
        return all(evaluate(e, variables) for e in expression)
    import jinja2

    try:
        result = _materialized(_run_expression(_bare(str(expression)), _variables(variables)))
        if isinstance(result, jinja2.Undefined):
            result._fail_with_undefined_error()
        return result
    except (jinja2.UndefinedError, jinja2.TemplateError, TypeError) as exc:
        raise TemplateError(f"{_explain(exc)} in {str(expression)!r}") from None


def condition(expression: Any, variables: Mapping[str, Any], keyword: str = "when") -> bool:
    """A conditional keyword's verdict (`when`, `until`, `changed_when`, `failed_when`, an
    `assert`'s `that`; a list: all of them), which must be true or false, as ansible-core 2.19
    requires. Text, a number, a list or None is an error naming the expression, never its
    truthiness: after `-e flag=false`, `when: flag` must not run the task."""
    if isinstance(expression, list | tuple):
        return all(condition(e, variables, keyword) for e in expression)
    result = evaluate(expression, variables)
    if isinstance(result, bool):
        return result
    shown = repr(result) if len(repr(result)) <= 80 else repr(result)[:80] + "…"  # `…`: the redactor hides a cut secret
    raise TemplateError(
        f"{keyword}: {str(expression)!r} gives {type(result).__name__} {shown}, not true or false; compare it, "
        "or write `| bool` (text such as 'yes' or 'false') or `| length > 0` (a list)"
    )


def with_defaults(variables: Mapping[str, Any], defaults: Mapping[str, Any]) -> Variables:
    """variables (used as they are) over defaults (rendered lazily when used)."""
    return layered((defaults, True), (variables, False))
