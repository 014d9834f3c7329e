"""The log folder every run leaves behind: ~/.fleet/runs/<run-id>/, one file per host with every
command (script, exit code, output, timing) and every task result, secrets masked; failed.txt with
the hosts that failed or were unreachable, which `--limit @failed` reads back."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from .model import CommandResult, FleetError, RunReport, TaskResult
from .secrets import Redactor

FAILED_FILE = "failed.txt"
LAST_FILE = "last"  # in the runs folder: the id of the newest run that wrote a log
_SCRIPT_LIMIT = 20_000
# File contents travel base64-encoded inside scripts: masking cannot see a secret in there.
_BASE64_BLOB = re.compile(r"printf %s ([A-Za-z0-9+/=]{64,}) \| base64 -d")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._@-]")
# A spilled output is masked one line at a time; a longer line keeps its first LINE_LIMIT bytes.
LINE_LIMIT = 1 << 20
_PART = ".part"  # a spilled output as it came, until masked (fleet.connection.spill_part)


def runs_dir() -> Path:
    return Path(os.environ.get("FLEET_HOME") or Path.home() / ".fleet") / "runs"


def _clock() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]


def shown_script(script: str) -> str:
    """A script as logs and -vv show it: embedded file contents as their size, long ones cut."""
    text = _BASE64_BLOB.sub(lambda m: f"printf %s <file content, {len(m.group(1)) * 3 // 4} bytes> | base64 -d", script)
    if len(text) > _SCRIPT_LIMIT:
        text = text[:_SCRIPT_LIMIT] + f"\n… ({len(text) - _SCRIPT_LIMIT} more characters)"
    return text


class RunLog:
    """Writes one run's log folder. Thread-safe; a log that cannot be written is reported once
    and then skipped: it never fails the run."""

    def __init__(self, run_id: str, redactor: Redactor, root: Path | None = None, *, keep: bool = True) -> None:
        self.dir = (root or runs_dir()) / run_id
        self.run_id = run_id
        self.redactor = redactor
        self._locks: dict[str, threading.Lock] = {}  # one per host's file (see _lock)
        self.files: dict[str, IO[str]] = {}
        self.current: dict[str, tuple[str, float]] = {}  # host -> (task, started)
        self.pending: dict[str, list[tuple[str, CommandResult | None]]] = {}  # host -> its task's commands
        self.error: str | None = None if keep else "not kept"  # keep=False: a read-only look writes nothing
        if not keep:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            self.error = f"cannot write the run log in {self.dir}: {exc.strerror or exc}"

    def _lock(self, host: str) -> threading.Lock:
        """Each host's file has its own lock. One lock for every file made each host's thread queue
        behind whichever thread held it while that one waited for the GIL after its write: over
        50 hosts, 20 s of waiting summed, a run's whole length for some hosts."""
        lock = self._locks.get(host)
        return lock if lock is not None else self._locks.setdefault(host, threading.Lock())

    def _write(self, host: str, text: str) -> None:
        if self.error:
            return
        text = self.redactor.show(text)
        with self._lock(host):
            try:
                fh = self.files.get(host)
                if fh is None:
                    name = _UNSAFE_NAME.sub("_", host) + ".log"
                    fh = self.files[host] = open(self.dir / name, "a", encoding="utf-8")  # noqa: SIM115
                fh.write(text)
                fh.flush()
            except OSError as exc:
                self.error = f"cannot write the run log in {self.dir}: {exc.strerror or exc}"

    # ---- events ------------------------------------------------------------------------------
    # A task's commands are written when its result comes: masked with what the task itself
    # revealed as secret, and left out for a no_log task.
    def _flush(self, host: str, hidden: bool = False) -> None:
        records = self.pending.pop(host, [])
        for _, result in records:  # output too large for memory: masked into its file, or gone (no_log)
            for raw in result.spilled if result else ():
                self._settle_spill(Path(raw), hidden)
        if hidden and records:
            self._write(host, f"-- {len(records)} command(s) of a no_log task: output hidden\n")
        elif records:
            self._write(host, "".join(text for text, _ in records))

    def _settle_spill(self, raw: Path, hidden: bool) -> None:
        try:
            if not hidden and not self.error:
                mask_output(raw, raw.with_name(raw.name.removesuffix(_PART)), self.redactor)
        except OSError as exc:
            self.error = f"cannot write the run log in {self.dir}: {exc.strerror or exc}"
        finally:
            raw.unlink(missing_ok=True)  # never left unmasked on disk

    def task_started(self, host: str, task: str) -> None:
        self._flush(host)  # the commands before a task (gathering facts)
        self.current[host] = (task, time.monotonic())
        self._write(host, f"\n== {_clock()} task: {task}\n")

    def command_done(self, host: str, script: str, result: CommandResult | None, error: str | None = None) -> None:
        lines = [f"-- {_clock()} command:\n{shown_script(script).rstrip()}\n"]
        if result is None:
            lines.append(f"-- no result: {error}\n")
        else:
            state = " (timed out)" if result.timed_out else ""
            lines.append(f"-- exit {result.exited}{state} in {result.duration:.3f}s\n")
            for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
                if text:
                    lines.append(f"-- {name}:\n{text.rstrip()}\n")
        with self._lock(host):
            self.pending.setdefault(host, []).append(("".join(lines), result))

    def task_done(self, result: TaskResult) -> None:
        self._flush(result.host, hidden=result.hidden)
        item = f" [{result.item}]" if result.item is not None else ""
        text = f"== {_clock()} result: {result.status}{item} in {result.duration:.3f}s"
        text += f": {result.message}\n" if result.message else "\n"
        if result.diff:
            text += result.diff.rstrip() + "\n"
        self._write(host=result.host, text=text)

    def host_unreachable(self, host: str, reason: str) -> None:
        self._flush(host)
        self._write(host, f"== {_clock()} unreachable: {reason}\n")

    def host_interrupted(self, host: str, task: str | None, reason: str) -> None:
        self._flush(host)
        self._write(host, f"== {_clock()} stopped{f' during {task}' if task else ''}: {reason}\n")

    def finish(self, report: RunReport) -> None:
        """failed.txt (one `host<TAB>why` line per failed, unreachable or stopped host) and the `last` pointer."""
        for host in list(self.pending):
            self._flush(host)
        for raw in self.dir.glob(f"*{_PART}"):  # a command that never came back: its raw output goes
            raw.unlink(missing_ok=True)
        for fh in self.files.values():
            with contextlib.suppress(OSError):
                fh.close()
        self.files.clear()
        if self.error:
            return
        # Hosts stopped part-way (Ctrl-C, a failure policy) are rerun by `@failed` too.
        stopped = {h.host: h.why or "" for h in report.hosts.values() if h.interrupted is not None}
        lines = [f"{host}\t{why}\n" for host, why in {**stopped, **report.failures()}.items()]
        try:
            (self.dir / FAILED_FILE).write_text(self.redactor.show("".join(lines)))
            (self.dir.parent / LAST_FILE).write_text(self.run_id + "\n")
        except OSError as exc:
            self.error = f"cannot write the run log in {self.dir}: {exc.strerror or exc}"


def mask_output(raw: Path, masked: Path, redactor: Redactor) -> None:
    """Copy a command's spilled output from `raw` to `masked` as the run log shows text (secrets
    masked, control characters escaped), one line at a time so memory stays bounded and no secret
    is split across two pieces. A line over LINE_LIMIT bytes keeps its start (ending in `…`, which
    makes the redactor hide a secret cut there) and says how much of it was left out."""
    fd = os.open(masked, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with raw.open("rb") as src, os.fdopen(fd, "w", encoding="utf-8") as dst:
        while line := src.readline(LINE_LIMIT):
            if len(line) < LINE_LIMIT or line.endswith(b"\n"):
                dst.write(redactor.show(line.decode("utf-8", "replace")))
                continue
            left_out = 0
            while rest := src.readline(LINE_LIMIT):  # the rest of this line, read and counted only
                left_out += len(rest)
                if rest.endswith(b"\n"):
                    break
            if not left_out:  # a last line of exactly LINE_LIMIT bytes: whole
                dst.write(redactor.show(line.decode("utf-8", "replace")))
                continue
            text = redactor.show(line.decode("utf-8", "replace") + "…")
            dst.write(f"{text} [fleet: {left_out} more bytes of this line left out]\n")


def failed_hosts(run_id: str | None = None, root: Path | None = None) -> tuple[str, list[str]]:
    """The hosts that failed or were unreachable in a run (default: the newest), for `@failed`."""
    root = root or runs_dir()
    if run_id is None:
        try:
            run_id = (root / LAST_FILE).read_text().strip()
        except OSError:
            raise FleetError(f"@failed: no earlier run recorded in {root}") from None
    try:
        text = (root / run_id / FAILED_FILE).read_text()
    except OSError:
        raise FleetError(f"@failed: run {run_id} left no {FAILED_FILE} in {root / run_id}") from None
    return run_id, [line.split("\t", 1)[0] for line in text.splitlines() if line.strip()]


def resolve_limit(pattern: str | None) -> str | None:
    """`@failed` (the newest run's failed and unreachable hosts), `@failed:<run-id>`, or `@file`
    (one host per line) become a host list; other patterns pass through."""
    if not pattern or not pattern.startswith("@"):
        return pattern
    name = pattern[1:]
    if name == "failed" or name.startswith("failed:"):
        run_id, hosts = failed_hosts(name.partition(":")[2] or None)
        if not hosts:
            raise FleetError(f"@failed: no host failed in run {run_id}; nothing to rerun")
        return ",".join(hosts)
    try:
        hosts = [line.split()[0] for line in Path(name).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise FleetError(f"--limit {pattern}: cannot read {name}: {exc.strerror or exc}") from None
    if not hosts:
        raise FleetError(f"--limit {pattern}: {name} names no host")
    return ",".join(hosts)
