"""Small helpers that build shell text safely: every value goes through shlex.quote."""

from __future__ import annotations

import base64
import shlex
from collections.abc import Iterable


def path(value: str) -> str:
    """Quote a path for sh, keeping a leading `~/` meaning the remote user's home."""
    if value == "~":
        return '"$HOME"'
    if value.startswith("~/"):
        return '"$HOME"/' + shlex.quote(value[2:])
    return shlex.quote(value)


def quote(value: object) -> str:
    return shlex.quote(str(value))


def join(words: list[str]) -> str:
    return shlex.join(words)


def env_name(name: str) -> str:
    """`name` if it can be an environment variable's name, else ValueError."""
    if not name.replace("_", "a").isalnum() or name[0].isdigit() or not name.isascii():
        raise ValueError(f"{name!r} is not a valid environment variable name")
    return name


def exports(env: Iterable[tuple[str, object]]) -> str:
    """`export NAME=value` lines, every value quoted."""
    return "".join(f"export {env_name(k)}={shlex.quote(str(v))}\n" for k, v in env)


def run_once(name: str, body: str, variables: str) -> str:
    """`body` as a function that runs once and is removed with the `variables` it sets: a script a
    probe batch may run in its own shell, without the fork of a subshell (fleet.probe.Probe.inline).
    `return` ends it early; its exit status is kept as 0 or 1."""
    clear = f"unset -f {name}; unset {variables}"
    return f"{name}() {{\n{body}\n}}\n{name}; case $? in 0) {clear};; *) {clear}; false;; esac\n"


def write_file(target: str, content: bytes, mode: int | None = None) -> str:
    """A script that writes content to target atomically: a temp file beside it, then rename,
    so a reader never sees half a file and a failure leaves the old one in place."""
    p = path(target)
    data = base64.b64encode(content).decode()
    keep_mode = f'if [ -e {p} ]; then chmod --reference={p} "$t"; else chmod 644 "$t"; fi; '
    set_mode = f'chmod {mode:o} "$t"; ' if mode is not None else keep_mode
    return (
        f'd=$(dirname -- {p}); mkdir -p -- "$d"; t=$(mktemp "$d/.fleet.XXXXXX") || exit 1; '
        f'printf %s {data} | base64 -d >"$t" || {{ rm -f "$t"; exit 1; }}; '
        f'{set_mode}mv -f -- "$t" {p} || {{ rm -f "$t"; exit 1; }}\n'
    )


def note_temp(quoted_path: str) -> str:
    """A line that lists a temp file in the fleet agent's temp list, so it is removed even when
    the controller dies mid-command (the agent removes what it listed on EOF; a later agent, what
    a killed one listed). Without an agent (FLEET_TEMP_LIST unset) it does nothing."""
    return f'if [ -n "${{FLEET_TEMP_LIST-}}" ]; then echo {quoted_path} >> "$FLEET_TEMP_LIST"; fi\n'
