"""Plain, frozen records that flow between the layers: what a command returned, what a task
plans, what happened on a host, what happened in a run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class FleetError(Exception):
    """Bad input a person can fix. Printed as one line, never with a traceback."""


class Unreachable(Exception):
    """A host could not be connected to, or stopped answering."""


# Where a command's output was too large to keep whole, the text says so from here on.
OUTPUT_GAP = "\n[fleet: "


@dataclass(frozen=True)
class CommandResult:
    stdout: str
    stderr: str
    exited: int
    duration: float = 0.0
    timed_out: bool = False
    interrupted: bool = False  # stopped by Connection.interrupt() (Ctrl-C, SIGTERM)
    dropped: int = 0  # bytes of output not kept in memory (their place is marked by OUTPUT_GAP)
    spilled: tuple[str, ...] = ()  # raw `<file>.part` copies of that output, masked into <file> by the run log
    # stdout's bytes as they came, kept only when the caller asked (`run(..., keep_bytes=True)`) and
    # none were dropped: for output that is not text (file content in a look, fleet/filelook.py).
    stdout_bytes: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.exited == 0 and not self.timed_out

    def brief(self) -> str:
        """The most telling line of the output, for one-line messages."""
        if self.timed_out:
            return "timed out"
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
            if lines:
                return lines[-1]
        return f"exit code {self.exited}"


@dataclass(frozen=True)
class Upload:
    """A file a plan writes before its script runs (written atomically by the connection)."""

    path: str
    content: bytes = b""
    mode: int | None = None
    source: str | None = None  # a local file streamed instead of `content` (never read whole)


@dataclass(frozen=True)
class Plan:
    """What a task would do to a host, decided purely from what its probe observed.

    No script means the host already matches: the task is ok and costs nothing more.
    """

    script: str | None = None
    summary: str = ""
    diff: str | None = None
    fail: str | None = None
    uploads: tuple[Upload, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    # Whether the apply's output decides "changed" (e.g. a command that always runs).
    always_runs: bool = False

    @property
    def changes(self) -> bool:
        return self.script is not None or bool(self.uploads)


@dataclass(frozen=True)
class RunOptions:
    check: bool = False
    diff: bool = False
    tags: frozenset[str] = frozenset()
    skip_tags: frozenset[str] = frozenset()
    extra_vars: Mapping[str, Any] = field(default_factory=dict)
    forks: int = 16
    accept_new_host_keys: bool = False
    # Send the probes of the tasks ahead in one request (off: one request per probe, to debug).
    batch_probes: bool = True
    no_lock: bool = False  # `fleet run` locks each host for the run unless told not to
    lock_wait: float = 60.0  # seconds to wait for another run's lock before failing the host


class Status(StrEnum):
    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class TaskResult:
    host: str
    task: str
    action: str
    status: Status
    message: str = ""
    diff: str | None = None
    duration: float = 0.0
    item: Any = None
    data: Mapping[str, Any] = field(default_factory=dict)
    ignored: bool = False
    hidden: bool = False  # no_log: what its commands printed must not be shown or logged

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "host": self.host,
            "task": self.task,
            "action": self.action,
            "status": str(self.status),
            "message": self.message,
            "duration": round(self.duration, 4),
        }
        if self.diff:
            out["diff"] = self.diff
        if self.item is not None:
            out["item"] = self.item
        if self.ignored:
            out["ignored"] = True
        return out


@dataclass
class HostReport:
    host: str
    results: list[TaskResult] = field(default_factory=list)
    unreachable: str | None = None
    interrupted: str | None = None  # the task it was in when the run was interrupted ("" between tasks)
    error: str | None = None  # why it failed outside any task (bad connection type, facts that failed)
    commands: int = 0
    duration: float = 0.0

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status is status and not r.ignored)

    @property
    def failed(self) -> bool:
        return self.error is not None or self.count(Status.FAILED) > 0

    @property
    def why(self) -> str | None:
        """Why this host failed, was unreachable or stopped, in one line (None when all went well)."""
        if self.unreachable:
            return f"unreachable: {self.unreachable}"
        if self.error:
            return self.error
        for r in self.results:
            if r.status is Status.FAILED and not r.ignored:
                return f"{r.task}: {r.message}"
        if self.interrupted is not None:
            return f"stopped during {self.interrupted!r}" if self.interrupted else "stopped before it started"
        return None

    @property
    def notes(self) -> list[str]:
        """What a task asked the recap to say in words (its data's `note`), e.g. an FA3 fallback."""
        return [r.data["note"] for r in self.results if r.data.get("note")]

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "ok": self.count(Status.OK),
            "changed": self.count(Status.CHANGED),
            "failed": self.count(Status.FAILED),
            "skipped": self.count(Status.SKIPPED),
            "unreachable": self.unreachable,
            "interrupted": self.interrupted is not None,
            "commands": self.commands,
            "duration": round(self.duration, 3),
            **({"notes": self.notes} if self.notes else {}),
            **({"why": self.why} if self.why else {}),
        }


@dataclass
class RunReport:
    hosts: dict[str, HostReport] = field(default_factory=dict)
    run_id: str = ""
    log_dir: str | None = None
    interrupted: bool = False
    stopped: str | None = None  # why the run stopped early (any_errors_fatal, max_fail_percentage)
    duration: float = 0.0

    def host(self, name: str) -> HostReport:
        return self.hosts.setdefault(name, HostReport(name))

    def failures(self) -> dict[str, str]:
        """Failed and unreachable hosts, each with why."""
        hosts = sorted(self.hosts.values(), key=lambda h: h.host)
        return {h.host: h.why or "" for h in hosts if h.failed or h.unreachable}

    @property
    def exit_code(self) -> int:
        """0 all good; 2 some host failed; 4 some host unreachable; 6 both; 130 interrupted."""
        if self.interrupted:
            return 130
        code = 0
        if any(h.failed for h in self.hosts.values()):
            code |= 2
        if any(h.unreachable for h in self.hosts.values()):
            code |= 4
        return code
