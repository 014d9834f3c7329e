"""Keep secrets out of output, logs and JSON.

A variable is secret when its name says so (password, token, secret, credential, api, `*_key`, ...)
or when a `secrets:` list (in an inventory's vars, a play, or `-e`) names it. Its value is then
masked wherever it appears in shown text: as is, and in the encodings a template or a host tends to
produce (URL-encoded, base64 at any byte offset, JSON-escaped, shell-quoted, HTML-escaped, hex).
"""

from __future__ import annotations

import base64
import html
import json
import re
import shlex
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from .sanitize import visible, visible_data

# Names whose values are secret material. `key` alone is the SSH key *path* (not secret), and so
# are `*_key_file` / `*_key_path`; `tokenizer` and `max_tokens` are model settings, not tokens.
SECRET_NAME = re.compile(
    r"""pass(word|wd|phrase)|(^|_)pass(_|$)
      | token(?!iz)(?!s$)
      | secret|credential|cookie|authorization|(^|_)auth$
      | (^|[_.-])api([_.-]|key|$)
      | (?<!public)(?<!host)(?<!pub)[_-]key$|(access|private|secret|signing|encryption|api)key$
      | private_?key$""",
    re.I | re.X,
)
MARKS = "secrets"  # the variable / play key that lists more secret names
MASK = "********"
MIN_LENGTH = 4  # shorter values are masked only where shown as a secret-named variable
_B64_CORE_MIN = 8  # base64 of a value inside longer data: mask only long enough cores


def is_secret_name(name: Any, marked: Iterable[str] = ()) -> bool:
    name = str(name)
    return name != MARKS and (name in marked or bool(SECRET_NAME.search(name)))


def marked_names(*mappings: Mapping[str, Any] | None) -> set[str]:
    """The names that `secrets:` lists in these variable mappings mark as secret."""
    names: set[str] = set()
    for mapping in mappings:
        listed = (mapping or {}).get(MARKS)
        if isinstance(listed, str):
            listed = [n.strip() for n in listed.split(",")]
        if isinstance(listed, list | tuple):
            names |= {str(n) for n in listed if str(n).strip()}
    return names


def inventory_marked_names(inventory: Any) -> set[str]:
    """Names marked secret anywhere in an inventory (any group's or host's `secrets:`): a name
    marked for one group is secret everywhere, so a more specific list never unmarks it."""
    groups = list((getattr(inventory, "groups", {}) or {}).values())
    hosts = [
        *(getattr(inventory, "host_vars", {}) or {}).values(),
        *(getattr(inventory, "host_file_vars", {}) or {}).values(),
    ]
    group_layers = [*(g.vars for g in groups), *(getattr(g, "file_vars", {}) for g in groups)]  # file: group_vars/
    return marked_names(*group_layers, *hosts)


def secret_values(*mappings: Mapping[str, Any] | None, marked: Iterable[str] = ()) -> set[str]:
    """Every value these mappings hold under a secret name (nested mappings and lists included)."""
    names = set(marked) | marked_names(*mappings)
    found: set[str] = set()
    for mapping in mappings:
        for key, value in (mapping or {}).items():
            if is_secret_name(key, names):
                # A number is secret only when named in `secrets:` (`api_port: 8000` is not).
                found |= _leaves(value, numbers=str(key) in names)
            elif isinstance(value, Mapping):
                found |= secret_values(value, marked=names)
    return {v for v in found if len(v) >= MIN_LENGTH}


def _leaves(value: Any, *, numbers: bool) -> set[str]:
    """The text of every scalar under a secret name: `credentials: {user: a, pass: b}` is secret whole."""
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple | set):
        return set().union(*(_leaves(v, numbers=numbers) for v in value))
    if value is None or isinstance(value, bool) or (isinstance(value, int | float) and not numbers):
        return set()
    return {str(value)}


def hidden_values(data: Mapping[str, Any], min_length: int = 6, max_length: int = 256, limit: int = 200) -> set[str]:
    """What a no_log task's result holds (its output whole and line by line), to be masked later.
    Bounded: a secret is a short line, and every value masked costs each later text scan."""
    found: set[str] = set()
    for text in _leaves(data, numbers=False):
        for line in [text, *text.splitlines()]:
            line = line.strip()
            if min_length <= len(line) <= max_length and len(found) < limit:
                found.add(line)
    return found


def encodings(value: str) -> set[str]:
    """The forms in which a value may appear in rendered text or host output."""
    forms = {
        value,
        quote(value, safe=""),
        quote(value, safe="/"),  # Jinja's urlencode
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        _html_safe_json(value),  # Jinja's tojson
        shlex.quote(value),
        html.escape(value),
        value.encode().hex(),
    }
    forms |= {re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), f) for f in forms if "%" in f}
    raw = value.encode()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        forms.add(encode(raw).decode())
        # Inside longer data (`user:token` in a basic-auth header) the value starts at any of three
        # byte offsets; the characters that depend only on the value's bytes are the same each time.
        for offset in range(3):
            text = encode(b"\0" * offset + raw).decode()
            core = text[-(-8 * offset // 6) : 8 * (offset + len(raw)) // 6]
            if len(core) >= _B64_CORE_MIN:
                forms.add(core)
    return {f for f in forms if f}


def _trie_pattern(words: Iterable[str]) -> str:
    """One regex for many literal words, factored by common prefixes: the engine branches on a
    character instead of trying every word at every position (200 values: 0.1 s per 4 MB instead of 18 s).
    Optional tails are greedy, so the longest word wins where words overlap."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        alternatives = [re.escape(char) + build(child) for char, child in node.items() if char]
        if not alternatives:
            return ""
        body = alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(trie)


def _html_safe_json(value: str) -> str:
    text = json.dumps(value)[1:-1]
    for char in "<>&'":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


class Redactor:
    """Masks known secret values (and their encodings) in text and data meant to be shown."""

    def __init__(self, values: Iterable[str] = (), names: Iterable[str] = ()) -> None:
        self.values: set[str] = set()
        self.names: set[str] = set()
        self._forms: list[str] = []
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()  # hosts' threads add what their no_log tasks printed
        self.add(values, names)

    def add(self, values: Iterable[str] = (), names: Iterable[str] = ()) -> None:
        with self._lock:
            new = {v for v in values if v and len(v) >= MIN_LENGTH} - self.values
            self.names = self.names | set(names)
            if not new:
                return
            self.values = self.values | new
            forms = set(self._forms).union(*(encodings(v) for v in new))
            self._forms = sorted(forms, key=len, reverse=True)
            self._pattern = re.compile(_trie_pattern(self._forms))

    def text(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        text = self._pattern.sub(MASK, text)
        if "…" in text:  # a shortened summary may end part-way into a secret: hide that part too
            text = self._cut_secrets(text)
        return text

    def _cut_secrets(self, text: str) -> str:
        out, start = [], 0
        for end in (m.start() for m in re.finditer("…", text)):
            window = text[max(start, end - 512) : end]
            for form in self._forms:
                if form[:3] not in window:  # cheap test first: most forms are nowhere near
                    continue
                cut = next((n for n in range(len(form) - 1, 2, -1) if text.endswith(form[:n], start, end)), 0)
                if cut:
                    out.append(text[start : end - cut] + MASK)
                    start = end
                    break
        return "".join(out) + text[start:]

    def scrub(self, obj: Any) -> Any:
        """Masked copy of data: secret-named keys lose their values whatever their length."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            return {k: MASK if v and is_secret_name(k, self.names) else self.scrub(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.scrub(v) for v in obj]
        return obj

    def show(self, obj: Any) -> Any:
        """What may reach a terminal, a log or JSON: secrets masked, control characters escaped."""
        if isinstance(obj, str):
            return visible(self.text(obj))
        return visible_data(self.scrub(obj))
