"""What a person (or a script) sees of a run: a rich live view on a terminal, plain lines
otherwise, JSON lines for machines (fleet/events.py), and a recap. The only module that imports rich."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any

from .events import EventWriter, new_run_id, task_result_fields
from .model import CommandResult, RunReport, Status, TaskResult
from .sanitize import visible
from .secrets import Redactor

STYLE = {
    Status.OK: "green",
    Status.CHANGED: "yellow",
    Status.FAILED: "red",
    Status.SKIPPED: "cyan",
    Status.UNREACHABLE: "magenta",
}
TAIL_LINES = 10  # of stderr and of stdout, under a failed task
VERBOSE_LINES = 200  # of each, under a changed or failed task with -v


class Reporter:
    """Receives a run's events, from many threads at once. This base class shows nothing."""

    def __init__(self) -> None:
        self.redactor = Redactor()
        self.lock = threading.Lock()
        self.run_id = new_run_id()

    def run_started(self, *, command: str, hosts: Sequence[str], **info: Any) -> None: ...

    def play_started(self, title: str, hosts: Sequence[str]) -> None: ...

    def task_started(self, host: str, task: str) -> None: ...

    def command_done(self, host: str, script: str, result: CommandResult | None, error: str | None) -> None: ...

    def task_done(self, result: TaskResult) -> None: ...

    def host_unreachable(self, host: str, reason: str) -> None: ...

    def host_interrupted(self, host: str, task: str | None, reason: str) -> None: ...

    def run_done(self, report: RunReport) -> None: ...


class Tee(Reporter):
    """Every event to several reporters (the screen, the run log, a failure-policy watch)."""

    def __init__(self, *reporters: Any) -> None:
        super().__init__()
        self.reporters = list(reporters)

    def _each(self, name: str) -> Callable[..., None]:
        def call(*args: Any, **kwargs: Any) -> None:
            for reporter in list(self.reporters):
                method = getattr(reporter, name, None)
                if method is not None:
                    method(*args, **kwargs)

        return call

    def run_started(self, **info: Any) -> None:
        self._each("run_started")(**info)

    def play_started(self, title: str, hosts: Sequence[str]) -> None:
        self._each("play_started")(title, hosts)

    def task_started(self, host: str, task: str) -> None:
        self._each("task_started")(host, task)

    def command_done(self, host: str, script: str, result: CommandResult | None, error: str | None) -> None:
        self._each("command_done")(host, script, result, error)

    def task_done(self, result: TaskResult) -> None:
        self._each("task_done")(result)

    def host_unreachable(self, host: str, reason: str) -> None:
        self._each("host_unreachable")(host, reason)

    def host_interrupted(self, host: str, task: str | None, reason: str) -> None:
        self._each("host_interrupted")(host, task, reason)

    def run_done(self, report: RunReport) -> None:
        self._each("run_done")(report)


def escape(text: str) -> str:
    """Text shown as is inside rich markup: `[a]` in a task name or message is not a style tag."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


PLAIN_WIDTH = 240  # off a terminal: the width tables are laid out for; lines never wrap


def _console(stream: IO[str] | None = None) -> Any:
    from rich.console import Console

    stream = stream or sys.stdout
    # Off a terminal, lines are for logs and greps: never wrap them. No emoji codes: `:x:` in a
    # diff or a host's message is text, not a picture.
    width = None if stream.isatty() else PLAIN_WIDTH
    return Console(file=stream, highlight=False, soft_wrap=not stream.isatty(), width=width, emoji=False)


def _surely_plain(stream: IO[str]) -> bool:
    """No terminal, whatever rich would decide: not a tty, and no FORCE_COLOR or TTY_COMPATIBLE
    saying otherwise. Output there is plain text, which fleet writes itself without loading rich."""
    if os.environ.get("FORCE_COLOR") is not None or os.environ.get("TTY_COMPATIBLE"):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return isatty is None or not isatty()
    except ValueError:
        return True


def _as_is(text: str) -> bool:
    """Text that rich prints unchanged off a terminal: ASCII, and no tab or control character
    (rich expands tabs and drops some control characters)."""
    return all(line.isascii() and line.isprintable() for line in text.split("\n"))


def _as_is_cell(text: str) -> bool:
    """A table cell rich lays out as it is: one line of _as_is text, no space at either end."""
    return "\n" not in text and _as_is(text) and text == text.strip()


def plain_table(
    rows: Sequence[Sequence[str]], columns: Sequence[str], *, right: Iterable[int] = (), title: str | None = None
) -> str | None:
    """The text rich prints for a `Table(box=None)` off a terminal, laid out without rich: one
    space of padding each side of a cell, columns as wide as their widest cell. None where rich
    would lay it out differently (a cell or title it would change, wrap or fold): rich does it then."""
    table = [list(columns), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    total = sum(widths) + 2 * len(widths)
    cells = [cell for row in table for cell in row]
    if total > PLAIN_WIDTH or not all(map(_as_is_cell, [*cells, title or ""])) or len(title or "") > total:
        return None
    right = set(right)
    lines = [title] if title else []
    for row in table:
        cells = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        lines.append("".join(f" {c} " for c in cells))
    return "\n".join(lines) + "\n"


class _PlainConsole:
    """Where the reporters print off a terminal: text as rich would print it there, written
    directly; what rich would change (see _as_is), and tables, go through rich after all."""

    is_terminal = False

    def __init__(self, stream: IO[str]) -> None:
        self.file = stream
        self._rich: Any = None

    def rich(self) -> Any:
        if self._rich is None:
            self._rich = _console(self.file)
        return self._rich

    def print(self, text: Any, **kwargs: Any) -> None:
        if isinstance(text, str) and _as_is(text):
            self.file.write(text + "\n")
            self.file.flush()
        else:
            self.rich().print(text, **kwargs)


def pipe_closed() -> None:
    """The reader of stdout left (`fleet ... | head`): send the rest of our output nowhere, so
    neither later prints nor the interpreter's final flush raise, and let the work finish."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _label(result: TaskResult) -> str:
    text = result.task
    if result.item is not None:
        item = result.item if isinstance(result.item, str | int | float) else _json(result.item)
        text += f" [{item}]"
    return text


def _json(value: Any) -> str:
    import json

    return json.dumps(value, default=str)


def tail(text: str, lines: int) -> list[str]:
    rows = text.rstrip().splitlines()
    if len(rows) <= lines:
        return rows
    return [f"… {len(rows) - lines} earlier line(s)", *rows[-lines:]]


def host_list(hosts: Sequence[str], shown: int = 8) -> str:
    """Names in full (never cut), the first few of a long list and how many more."""
    hosts = sorted(hosts)
    if len(hosts) <= shown:
        return ", ".join(hosts)
    return ", ".join(hosts[:shown]) + f" and {len(hosts) - shown} more"


class PlainReporter(Reporter):
    """One line per task start and result; why a task failed; grouped diffs at the end.
    For pipes, logs and CI."""

    def __init__(self, stream: IO[str] | None = None, *, show_ok: bool = True, verbosity: int = 0) -> None:
        super().__init__()
        self.stream = stream or sys.stdout
        self.terminal = not _surely_plain(self.stream) and self.console.is_terminal  # asked once, not per line
        self.show_ok = show_ok
        self.verbosity = verbosity
        self.closed = False
        self.width = 16
        # task label -> diff text -> hosts
        self.diffs: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.scripts: dict[str, list[str]] = {}  # -vv: the commands of each host's task in progress

    @functools.cached_property
    def console(self) -> Any:
        """rich's console: only on a terminal (off one, fleet writes the plain text itself)."""
        return _console(self.stream)

    # ---- output ------------------------------------------------------------------------------
    def _out(self, text: str, style: str | None = None) -> None:
        """Write under the lock; plain text off a terminal (rendering under the lock made every
        host's thread queue behind it)."""
        if self.closed:
            return
        try:
            if not self.terminal:
                self.stream.write(text + "\n")
                self.stream.flush()
            else:
                self.console.print(text, style=style, markup=False, highlight=False)
        except BrokenPipeError:
            self.closed = True
            pipe_closed()

    def _status_line(self, status: str, style: str, rest: str) -> None:
        if self.terminal and not self.closed:
            try:
                self.console.print(f"[{style}]{status:<8}[/] {escape(rest)}", markup=True, highlight=False)
            except BrokenPipeError:
                self.closed = True
                pipe_closed()
            return
        self._out(f"{status:<8} {rest}")

    def _host(self, host: str) -> str:
        return f"{host:<{self.width}}"

    # ---- events ------------------------------------------------------------------------------
    def run_started(self, *, command: str, hosts: Sequence[str], **info: Any) -> None:
        self.width = max(16, min(40, max((len(h) for h in hosts), default=0)))

    def play_started(self, title: str, hosts: Sequence[str]) -> None:
        with self.lock:
            if self.terminal and not self.closed:
                with contextlib.suppress(BrokenPipeError):
                    self.console.print(f"[bold]PLAY {escape(title)}[/] on {len(hosts)} host(s)")
                return
            self._out(f"PLAY {title} on {len(hosts)} host(s)")

    def task_started(self, host: str, task: str) -> None:
        if self.terminal:
            return  # the live view shows it
        with self.lock:
            self._out(f"{'start':<8} {self._host(host)} {task}")

    def command_done(self, host: str, script: str, result: CommandResult | None, error: str | None) -> None:
        if self.verbosity < 2:
            return
        text = [f"  {host} $ " + line for line in _shown_script(script).splitlines()]
        text.append(f"  {host} -> " + (f"exit {result.exited} in {result.duration:.2f}s" if result else str(error)))
        with self.lock:  # shown with the task's result: masked by then with what the task revealed
            self.scripts.setdefault(host, []).append("\n".join(text))

    def _scripts(self, result: TaskResult) -> str | None:
        with self.lock:
            scripts = self.scripts.pop(result.host, [])
        if not scripts:
            return None
        if result.hidden:
            return f"  {result.host}: {len(scripts)} command(s) of a no_log task, not shown"
        return self.redactor.show("\n".join(scripts))

    def task_done(self, result: TaskResult) -> None:
        scripts = self._scripts(result)
        if result.status is Status.OK and not self.show_ok and self.verbosity < 1:
            return
        status = "ignored" if result.ignored else str(result.status)
        message = f"  {result.message}" if result.message else ""
        details = self._details(result)
        with self.lock:
            if scripts:
                self._out(scripts, style="dim")
            self._status_line(status, STYLE[result.status], f"{self._host(result.host)} {_label(result)}{message}")
            if details:
                self._out("\n".join(details), style="red" if result.status is Status.FAILED else None)
            if result.diff:
                self.diffs[_label(result)][result.diff.rstrip()].append(result.host)

    def _details(self, result: TaskResult) -> list[str]:
        """Why a task failed (exit code, last lines of stderr and stdout); with -v what a changed
        or failed task printed."""
        failed = result.status is Status.FAILED
        verbose = self.verbosity >= 1 and result.status in (Status.CHANGED, Status.FAILED)
        if not (failed or verbose) or result.hidden:
            return []
        data: Mapping[str, Any] = result.data or {}
        lines = []
        if failed and isinstance(data.get("rc"), int):
            lines.append(f"    rc: {data['rc']}")
        limit = VERBOSE_LINES if verbose else TAIL_LINES
        for name in ("stderr", "stdout"):
            text = str(data.get(name) or "")
            if text.strip():
                lines.append(f"    {name}:")
                lines += [f"      {line}" for line in tail(self.redactor.show(text), limit)]
        return lines

    def host_unreachable(self, host: str, reason: str) -> None:
        reason = self.redactor.show(reason)
        with self.lock:
            self._status_line("unreachable", "magenta", f"{self._host(host)} {reason}")

    def host_interrupted(self, host: str, task: str | None, reason: str) -> None:
        with self.lock:
            self._status_line("stopped", "magenta", f"{self._host(host)} {task or ''}  ({reason})")

    def run_done(self, report: RunReport) -> None:
        with self.lock:
            try:
                out = self.console if self.terminal else _PlainConsole(self.stream)
                print_diffs(self.diffs, out)
                print_recap(report, out)
            except BrokenPipeError:
                self.closed = True
                pipe_closed()


def _shown_script(script: str) -> str:
    from .runlog import shown_script

    return shown_script(script)


def _common_start(texts: Sequence[str]) -> str:
    first, last = min(texts), max(texts)
    size = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), min(len(first), len(last)))
    return first[:size]


def short_names(hosts: Sequence[str], width: int) -> dict[str, str]:
    """Host names that fit `width` and stay unambiguous: what all the names share at their start
    and end (up to a `-`, `.` or `_`) is elided, never the part that tells them apart
    (`gh200-rack01-node07-ib` -> `gh…rack01-node07…`). Otherwise names stay whole (and wrap)."""
    names = sorted(set(hosts))
    whole = {h: h for h in names}
    if len(names) < 2 or max(map(len, names)) <= width:
        return whole
    head = _common_start(names)
    head = head[: max(head.rfind(c) for c in "-._") + 1]  # whole words only
    rests = [n[len(head) :] for n in names]
    tail = _common_start([r[::-1] for r in rests])[::-1]
    cuts = [i for i, c in enumerate(tail) if c in "-._"]
    tail = tail[cuts[0] :] if cuts else ""
    middles = [r[: len(r) - len(tail)] for r in rests]
    if not all(middles) or len(set(middles)) < len(names):
        return whole
    shown = {}
    for name, middle in zip(names, middles, strict=True):
        keep = max(0, min(len(head), width - len(middle) - 2))
        shown[name] = (head[:keep] + "…" if head else "") + middle + ("…" if tail else "")
    return shown


class LiveReporter(PlainReporter):
    """A live table of what every host is doing (with how long it has been at it), above the
    changed/failed lines. It fits the terminal: the hosts that have been busy longest first,
    then "N more hosts", then totals."""

    def __init__(self, stream: IO[str] | None = None, *, verbosity: int = 0) -> None:
        super().__init__(stream, show_ok=False, verbosity=verbosity)
        from rich.live import Live

        self.current: dict[str, tuple[str, float | None]] = {}  # host -> (task or state, started)
        self.counts: dict[str, dict[str, int]] = {}
        self.names: dict[str, str] = {}  # host -> how the table shows it
        self.state = threading.Lock()  # guards current/counts/names; never held while printing
        self.started = time.monotonic()
        self.live = Live(get_renderable=self._table, console=self.console, refresh_per_second=4, transient=True)
        self.live.start()

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(box=None, show_header=True, header_style="bold", expand=False)
        table.add_column("host", overflow="fold", max_width=40)  # a long name wraps, never cut
        table.add_column("now", overflow="ellipsis", no_wrap=True, ratio=1)
        table.add_column("for", justify="right", no_wrap=True)
        for column in ("ok", "chg", "fail"):
            table.add_column(column, justify="right", no_wrap=True)
        now = time.monotonic()
        with self.state:  # never self.lock: printing holds it while rich asks for this table
            current = dict(self.current)
            counts = {h: dict(c) for h, c in self.counts.items()}
        busy = sorted((h for h, (_, t) in current.items() if t is not None), key=lambda h: (current[h][1], h))
        rest = sorted(h for h in current if h not in busy)
        longest = max((len(self.names.get(h, h)) for h in current), default=0)
        per_row = 1 if longest <= self.console.size.width // 3 else 2  # a name too long wraps
        room = max(3, (self.console.size.height - 6) // per_row)
        shown = (busy + rest)[:room]
        names = self.names
        for host in shown:
            task, since = current[host]
            c = counts.get(host, {})
            table.add_row(
                names.get(host, host),
                task,
                f"{now - since:.0f}s" if since is not None else "",
                str(c.get("ok", 0)),
                str(c.get("changed", 0)),
                f"[red]{c['failed']}[/]" if c.get("failed") else "0",
            )
        hidden = len(current) - len(shown)
        totals = {k: sum(c.get(k, 0) for c in counts.values()) for k in ("ok", "changed", "failed")}
        states = f"{len(busy)} busy, {len(rest)} idle"
        more = f"{hidden} more hosts; " if hidden else ""
        table.add_row(
            f"[bold]{len(current)} hosts[/]",
            f"{more}{states}",
            f"{now - self.started:.0f}s",
            str(totals["ok"]),
            str(totals["changed"]),
            str(totals["failed"]),
        )
        return table

    def play_started(self, title: str, hosts: Sequence[str]) -> None:
        super().play_started(title, hosts)
        with self.state:
            for host in hosts:
                self.current.setdefault(host, ("waiting", None))
            self.names = short_names(list(self.current), max(12, self.console.size.width // 3))

    def task_started(self, host: str, task: str) -> None:
        with self.state:
            self.current[host] = (task, time.monotonic())

    def task_done(self, result: TaskResult) -> None:
        with self.state:
            counts = self.counts.setdefault(result.host, {})
            counts[str(result.status)] = counts.get(str(result.status), 0) + 1
            self.current[result.host] = ("done", None)
        super().task_done(result)

    def host_unreachable(self, host: str, reason: str) -> None:
        with self.state:
            self.current[host] = ("unreachable", None)
        super().host_unreachable(host, reason)

    def host_interrupted(self, host: str, task: str | None, reason: str) -> None:
        with self.state:
            self.current[host] = ("stopped", None)
        super().host_interrupted(host, task, reason)

    def run_done(self, report: RunReport) -> None:
        with contextlib.suppress(BrokenPipeError):
            self.live.stop()
        super().run_done(report)


class JsonReporter(Reporter):
    """JSON Lines, one event per line (docs/events.md)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.writer = EventWriter(stream, run_id=self.run_id)

    def _emit(self, event: str, **fields: Any) -> None:
        self.writer.redactor = self.redactor
        self.writer.emit(event, **fields)

    def run_started(self, *, command: str, hosts: Sequence[str], **info: Any) -> None:
        self._emit("run_start", command=command, hosts=list(hosts), **{k: v for k, v in info.items() if v is not None})

    def play_started(self, title: str, hosts: Sequence[str]) -> None:
        self._emit("play_start", play=title, hosts=list(hosts))

    def task_started(self, host: str, task: str) -> None:
        self._emit("task_start", host=host, task=task)

    def task_done(self, result: TaskResult) -> None:
        self._emit("task_result", **task_result_fields(result))

    def host_unreachable(self, host: str, reason: str) -> None:
        self._emit("host_unreachable", host=host, message=reason)

    def host_interrupted(self, host: str, task: str | None, reason: str) -> None:
        self._emit("host_interrupted", host=host, task=task)

    def run_done(self, report: RunReport) -> None:
        for host in report.hosts.values():
            self._emit("recap", **host.as_dict())
        failures = report.failures()
        end = {
            "exit_code": report.exit_code,
            "interrupted": report.interrupted,
            "failed_hosts": [h for h in failures if not report.hosts[h].unreachable],
            "unreachable_hosts": [h for h in failures if report.hosts[h].unreachable],
            "duration": round(report.duration, 3),
        }
        if report.log_dir:
            end["log_dir"] = report.log_dir
        if report.stopped:
            end["stopped"] = report.stopped
        self._emit("run_end", **end)


def choose_reporter(*, json_lines: bool, stream: IO[str] | None = None, verbosity: int = 0) -> Reporter:
    stream = stream or sys.stdout
    if json_lines:
        return JsonReporter(stream)
    if stream.isatty():
        return LiveReporter(stream, verbosity=verbosity)
    return PlainReporter(stream, verbosity=verbosity)


def print_diffs(diffs: Mapping[str, Mapping[str, list[str]]], console: Any) -> None:
    """Diffs grouped by task; a diff that is the same on several hosts is shown once."""
    for task, by_text in diffs.items():
        console.print(f"--- diff: {task}", markup=False, highlight=False, style="bold")
        for text, hosts in sorted(by_text.items(), key=lambda kv: -len(kv[1])):
            head = f"same on {len(hosts)} hosts: {host_list(hosts)}" if len(hosts) > 1 else hosts[0]
            console.print(f"{head}:", markup=False, highlight=False, style="cyan")
            console.print(text, markup=False, highlight=False)


RECAP_COLUMNS = ("host", "ok", "changed", "failed", "skipped", "unreachable", "commands", "time")


def print_recap(report: RunReport, console: Any) -> None:
    hosts = [host.as_dict() for host in sorted(report.hosts.values(), key=lambda h: h.host)]
    text = None
    if not console.is_terminal:  # a few ms a host through rich; the same text written directly
        rows = [
            [
                d["host"], str(d["ok"]), str(d["changed"]), str(d["failed"]), str(d["skipped"]),
                "yes" if d["unreachable"] else ("stopped" if d["interrupted"] else "no"),
                str(d["commands"]), f"{d['duration']:.2f}s",
            ]
            for d in hosts
        ]  # fmt: skip
        text = plain_table(rows, RECAP_COLUMNS, right=range(1, len(RECAP_COLUMNS)), title="recap")
    if text is not None:
        console.file.write(text)
    else:
        from rich.table import Table

        table = Table(title="recap", title_justify="left", box=None, header_style="bold")
        for column in RECAP_COLUMNS:
            table.add_column(column, justify="left" if column == "host" else "right", overflow="fold")
        for d in hosts:
            table.add_row(
                escape(d["host"]),
                f"[green]{d['ok']}[/]",
                f"[yellow]{d['changed']}[/]" if d["changed"] else "0",
                f"[red]{d['failed']}[/]" if d["failed"] else "0",
                str(d["skipped"]),
                "[magenta]yes[/]" if d["unreachable"] else ("stopped" if d["interrupted"] else "no"),
                str(d["commands"]),
                f"{d['duration']:.2f}s",
            )
        console.print(table)
    for host in sorted(report.hosts.values(), key=lambda h: h.host):
        for note in host.notes:
            console.print(f"note {host.host}: {visible(note)}", markup=False, highlight=False)
    for line in summary_lines(report):
        console.print(line, markup=False, highlight=False)


def summary_lines(report: RunReport) -> list[str]:
    """The end of every run's output: failed/unreachable hosts and why, how it stopped, the log."""
    lines = []
    failures = report.failures()
    if failures:
        lines.append(f"{len(failures)} host(s) failed or unreachable:")
        by_why: dict[str, list[str]] = defaultdict(list)
        for host, why in failures.items():  # the same reason on many hosts is said once
            masked = why.replace(host, "<host>") if len(failures) > 1 else why
            by_why[masked].append(host)
        for why, hosts in sorted(by_why.items(), key=lambda kv: -len(kv[1])):
            if len(hosts) == 1:
                lines.append(f"  {hosts[0]}: {failures[hosts[0]]}")
            else:
                lines.append(f"  {len(hosts)} hosts ({host_list(hosts)}): {why}")
        lines.append("  rerun just them with: --limit @failed")
    if report.stopped:
        lines.append(f"run stopped early: {report.stopped}")
    stopped = sorted(h.host for h in report.hosts.values() if h.interrupted is not None)
    if stopped and not failures:
        lines.append(f"rerun the {len(stopped)} host(s) stopped part-way with: --limit @failed")
    if report.interrupted:
        lines.append(
            f"interrupted: {len(stopped)} host(s) stopped part-way" + (f" ({host_list(stopped)})" if stopped else "")
        )
    if report.log_dir:
        lines.append(f"log: {report.log_dir}")
    return lines


def print_table(
    rows: Iterable[Sequence[Any]], columns: Sequence[str], *, title: str | None = None, stream: IO[str] | None = None
) -> None:
    """A plain table for commands such as `fleet facts` and `fleet train status`."""
    stream = stream or sys.stdout
    cells = [["" if v is None else visible(str(v)) for v in row] for row in rows]
    if _surely_plain(stream) and (text := plain_table(cells, columns, title=title)) is not None:
        stream.write(text)
        stream.flush()
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", box=None, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in cells:
        table.add_row(*(Text(v) for v in row))  # plain text, never markup
    _console(stream).print(table)


def print_line(text: str, *, style: str | None = None, stream: IO[str] | None = None) -> None:
    stream = stream or sys.stdout
    (_PlainConsole(stream) if _surely_plain(stream) else _console(stream)).print(
        visible(text), style=style, markup=False, highlight=False
    )
