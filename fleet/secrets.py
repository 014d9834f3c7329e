"""Keep secrets out of output, logs and JSON: any value of a variable whose name says it is a
secret (password, token, secret, api key, ...) is replaced wherever it appears."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

SECRET_NAME = re.compile(r"pass(word|wd|phrase)?$|pass_|token|secret|api_?key|credential|private_key$", re.I)
MASK = "********"


def secret_values(*mappings: Mapping[str, Any] | None) -> set[str]:
    found: set[str] = set()
    for mapping in mappings:
        for key, value in (mapping or {}).items():
            if isinstance(value, Mapping):
                found |= secret_values(value)
            elif SECRET_NAME.search(str(key)) and isinstance(value, str | int) and len(str(value)) >= 4:
                found.add(str(value))
    return found


class Redactor:
    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values = sorted({v for v in values if v}, key=len, reverse=True)

    def add(self, values: Iterable[str]) -> None:
        self.values = sorted(set(self.values) | {v for v in values if v}, key=len, reverse=True)

    def text(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, MASK)
            if "…" in text:  # a shortened summary may end part-way into a secret: hide that part too
                for cut in range(len(value) - 1, 2, -1):
                    text = text.replace(value[:cut] + "…", MASK + "…")
        return text

    def scrub(self, obj: Any) -> Any:
        if not self.values:
            return obj
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            return {k: MASK if SECRET_NAME.search(str(k)) and v else self.scrub(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.scrub(v) for v in obj]
        return obj
