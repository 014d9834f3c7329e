"""The one machine-readable stream of every command (`--json`): JSON Lines, one event per line,
each with its type, the run's id and a UTC timestamp. docs/events.md describes every event and
field; SCHEMA below is the same contract as JSON Schema (the tests validate every event against it)."""

from __future__ import annotations

import json
import secrets
import sys
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from .secrets import Redactor


def new_run_id() -> str:
    """Sortable by start time, unique across runs started in the same second."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventWriter:
    """Writes events as JSON Lines, masked, from many threads; a closed pipe ends output quietly."""

    def __init__(self, stream: IO[str] | None = None, *, run_id: str | None = None, redactor: Redactor | None = None):
        self.stream = stream or sys.stdout
        self.run_id = run_id or new_run_id()
        self.redactor = redactor or Redactor()
        self.lock = threading.Lock()
        self.closed = False

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "run_id": self.run_id, "ts": timestamp(), **fields}
        line = json.dumps(self.redactor.show(record), default=str)
        with self.lock:
            if self.closed:
                return
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except BrokenPipeError:
                self.closed = True  # the reader left (`| head`): the run goes on, silently


# ---- the contract --------------------------------------------------------------------------------
_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_INT = {"type": "integer"}
_NINT = {"type": ["integer", "null"]}
_NUM = {"type": "number"}
_BOOL = {"type": "boolean"}
_HOSTS = {"type": "array", "items": _STR}
_STATUS = {"enum": ["ok", "changed", "failed", "skipped", "unreachable"]}


def _event(
    name: str, required: dict[str, Any], optional: dict[str, Any] | None = None, *, open_ended: bool = False
) -> dict[str, Any]:
    """An event's schema; `open_ended` for records whose fields are another document's (facts)."""
    properties = {"event": {"const": name}, "run_id": _STR, "ts": _STR, **required, **(optional or {})}
    return {
        "type": "object",
        "properties": properties,
        "required": ["event", "run_id", "ts", *required],
        "additionalProperties": open_ended,
    }


_COUNTS = {"ok": _INT, "changed": _INT, "failed": _INT, "skipped": _INT}

EVENTS: dict[str, dict[str, Any]] = {
    "run_start": _event(
        "run_start",
        {"command": _STR, "hosts": _HOSTS},
        {"playbook": _STR, "check": _BOOL, "log_dir": _STR, "pattern": _NSTR},
    ),
    "play_start": _event("play_start", {"play": _STR, "hosts": _HOSTS}),
    "task_start": _event("task_start", {"host": _STR, "task": _STR}),
    "task_result": _event(
        "task_result",
        {
            "host": _STR,
            "task": _STR,
            "action": _STR,
            "status": _STATUS,
            "message": _STR,
            "rc": _NINT,
            "stdout": _STR,
            "stderr": _STR,
            "diff": _NSTR,
            "duration": _NUM,
        },
        {"item": {}, "ignored": _BOOL, "attempts": _INT},
    ),
    "host_unreachable": _event("host_unreachable", {"host": _STR, "message": _STR}),
    "host_interrupted": _event("host_interrupted", {"host": _STR, "task": _NSTR}),
    "recap": _event(
        "recap",
        {
            "host": _STR,
            **_COUNTS,
            "unreachable": _NSTR,
            "interrupted": _BOOL,
            "commands": _INT,
            "duration": _NUM,
        },
        {"notes": _HOSTS, "why": _NSTR},
    ),
    "run_end": _event(
        "run_end",
        {
            "exit_code": _INT,
            "interrupted": _BOOL,
            "failed_hosts": _HOSTS,
            "unreachable_hosts": _HOSTS,
            "duration": _NUM,
        },
        {"log_dir": _STR, "stopped": _NSTR},
    ),
    "shell_result": _event(
        "shell_result",
        {"host": _STR, "rc": _NINT, "stdout": _STR, "stderr": _STR, "duration": _NUM},
        {"timed_out": _BOOL},
    ),
    # `fleet train logs --json`: one event per log line.
    "log_line": _event("log_line", {"host": _STR, "line": _STR}),
    # One record per host for the commands that look rather than change.
    "host": _event("host", {"host": _STR, "groups": _HOSTS, "vars": {"type": "object"}}),
    "facts": _event("facts", {"host": _STR}, {"unreachable": _STR, "stack_differs": _BOOL}, open_ended=True),
    "health": _event(
        "health",
        {"host": _STR, "healthy": _BOOL},
        {"unreachable": _STR, "gpus": _INT, "problems": {"type": "array"}, "health": {"type": ["object", "null"]}},
    ),
    "train_status": _event("train_status", {"host": _STR, "state": _STR}, {"note": _NSTR}, open_ended=True),
    "doctor": _event(
        "doctor",
        {"host": _STR, "stage": _STR, "venv": _STR},
        {"finding": _NSTR, "problem": _STR, "remedy": _STR, "error": _STR, "note": _BOOL},
    ),
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "fleet --json event",
    "oneOf": list(EVENTS.values()),
}


def task_result_fields(result: Any) -> dict[str, Any]:
    """A TaskResult as the fields of a task_result event: rc/stdout/stderr from what the task's
    command returned (null/empty when it ran none)."""
    data: Mapping[str, Any] = result.data or {}
    rc = data.get("rc")
    fields = {
        "host": result.host,
        "task": result.task,
        "action": result.action,
        "status": str(result.status),
        "message": result.message,
        "rc": rc if isinstance(rc, int) else None,
        "stdout": str(data.get("stdout") or ""),
        "stderr": str(data.get("stderr") or ""),
        "diff": result.diff or None,
        "duration": round(result.duration, 4),
    }
    if result.item is not None:
        fields["item"] = result.item
    if result.ignored:
        fields["ignored"] = True
    attempts = data.get("attempts")
    if isinstance(attempts, int):
        fields["attempts"] = attempts
    return fields
