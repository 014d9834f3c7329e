"""Text from hosts is shown, never obeyed: control characters (terminal escapes such as
`ESC ]0;title`, `ESC [2J`, a lone carriage return, C1 codes, bidirectional overrides) are rendered
as visible escapes like `\\x1b` before they reach a terminal, a log or JSON. Newline and tab stay."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_CONTROL = re.compile("\r(?!\n)|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """text with every control character but newline and tab escaped (CRLF becomes a newline)."""
    if not isinstance(text, str):
        return text
    text = text.replace("\r\n", "\n") if "\r\n" in text else text
    return _CONTROL.sub(_escape, text)


def visible_data(obj: Any) -> Any:
    """visible() applied to every string inside lists and mappings (keys too)."""
    if isinstance(obj, str):
        return visible(obj)
    if isinstance(obj, Mapping):
        return {visible_data(k): visible_data(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [visible_data(v) for v in obj]
    return obj
