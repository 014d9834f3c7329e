"""What a person (or a script) sees of a run: a rich live view on a terminal, plain lines
otherwise, JSON lines for machines, and a recap table. The only module that imports rich."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

from .model import RunReport, Status, TaskResult
from .sanitize import visible
from .secrets import Redactor

STYLE = {
    Status.OK: "green",
    Status.CHANGED: "yellow",
    Status.FAILED: "red",
    Status.SKIPPED: "cyan",
    Status.UNREACHABLE: "magenta",
}


class Reporter:
    """Receives a run's events, from many threads at once. This base class shows nothing."""

    def __init__(self) -> None:
        self.redactor = Redactor()
        self.lock = threading.Lock()

    def play_started(self, title: str, hosts: Sequence[str]) -> None: ...

    def task_started(self, host: str, task: str) -> None: ...

    def task_done(self, result: TaskResult) -> None: ...

    def host_unreachable(self, host: str, reason: str) -> None: ...

    def run_done(self, report: RunReport) -> None: ...


def escape(text: str) -> str:
    """Text shown as is inside rich markup: `[a]` in a task name or message is not a style tag."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _console(stream: IO[str] | None = None) -> Any:
    from rich.console import Console

    stream = stream or sys.stdout
    # Off a terminal, lines are for logs and greps: never wrap them.
    width = None if stream.isatty() else 240
    return Console(file=stream, highlight=False, soft_wrap=not stream.isatty(), width=width)


def _label(result: TaskResult) -> str:
    text = result.task
    if result.item is not None:
        item = result.item if isinstance(result.item, str | int | float) else json.dumps(result.item)
        text += f" [{item}]"
    return text


class PlainReporter(Reporter):
    """One line per task result; diffs when asked. For pipes, logs and CI."""

    def __init__(self, stream: IO[str] | None = None, *, show_ok: bool = True) -> None:
        super().__init__()
        self.console = _console(stream)
        self.show_ok = show_ok

    def play_started(self, title: str, hosts: Sequence[str]) -> None:
        with self.lock:
            self.console.print(f"[bold]PLAY {escape(title)}[/] on {len(hosts)} host(s)")

    def task_done(self, result: TaskResult) -> None:
        if result.status is Status.OK and not self.show_ok:
            return
        status = "ignored" if result.ignored else str(result.status)
        message = f"  {result.message}" if result.message else ""
        if not self.console.is_terminal:
            # Plain text needs no rich rendering. Rendering under the lock made every host's
            # thread queue behind it: seconds lost at 50 hosts.
            line = f"{status:<8} {result.host:<16} {_label(result)}{message}\n"
            if result.diff:
                line += result.diff.rstrip() + "\n"
            with self.lock:
                self.console.file.write(line)
            return
        text = escape(f"{result.host:<16} {_label(result)}{message}")  # brackets in names are not markup
        with self.lock:
            self.console.print(
                f"[{STYLE[result.status]}]{status:<8}[/] {text}",
                markup=True,
                highlight=False,
            )
            if result.diff:
                self.console.print(result.diff.rstrip(), markup=False)

    def host_unreachable(self, host: str, reason: str) -> None:
        reason = self.redactor.show(reason)
        with self.lock:
            self.console.print(f"[magenta]unreachable[/] {escape(f'{host:<16} {reason}')}", markup=True)

    def run_done(self, report: RunReport) -> None:
        with self.lock:
            print_recap(report, self.console)


class LiveReporter(PlainReporter):
    """A live table of what every host is doing, above the changed/failed lines."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__(stream, show_ok=False)
        from rich.live import Live

        self.current: dict[str, str] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.live = Live(self._table(), console=self.console, refresh_per_second=8, transient=True)
        self.live.start()

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(box=None, show_header=True, header_style="bold")
        for column in ("host", "now", "ok", "changed", "failed"):
            table.add_column(column)
        for host in sorted(self.current):
            c = self.counts.get(host, {})
            table.add_row(
                escape(host),
                escape(self.current[host]),
                str(c.get("ok", 0)),
                str(c.get("changed", 0)),
                str(c.get("failed", 0)),
            )
        return table

    def play_started(self, title: str, hosts: Sequence[str]) -> None:
        super().play_started(title, hosts)
        with self.lock:
            for host in hosts:
                self.current.setdefault(host, "waiting")
            self.live.update(self._table())

    def task_started(self, host: str, task: str) -> None:
        with self.lock:
            self.current[host] = task
            self.live.update(self._table())

    def task_done(self, result: TaskResult) -> None:
        with self.lock:
            counts = self.counts.setdefault(result.host, {})
            counts[str(result.status)] = counts.get(str(result.status), 0) + 1
            self.live.update(self._table())
        super().task_done(result)

    def host_unreachable(self, host: str, reason: str) -> None:
        with self.lock:
            self.current[host] = "unreachable"
        super().host_unreachable(host, reason)

    def run_done(self, report: RunReport) -> None:
        self.live.stop()
        super().run_done(report)


class JsonReporter(Reporter):
    """JSON lines: one event per task result, then one recap line per host."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.stream = stream or sys.stdout

    def _write(self, event: Mapping[str, Any]) -> None:
        line = json.dumps(self.redactor.show(dict(event)), default=str)
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def play_started(self, title: str, hosts: Sequence[str]) -> None:
        self._write({"event": "play", "play": title, "hosts": list(hosts)})

    def task_done(self, result: TaskResult) -> None:
        self._write({"event": "task", **result.as_dict()})

    def host_unreachable(self, host: str, reason: str) -> None:
        self._write({"event": "unreachable", "host": host, "message": reason})

    def run_done(self, report: RunReport) -> None:
        for host in report.hosts.values():
            self._write({"event": "recap", **host.as_dict()})


def choose_reporter(*, json_lines: bool, stream: IO[str] | None = None) -> Reporter:
    stream = stream or sys.stdout
    if json_lines:
        return JsonReporter(stream)
    if stream.isatty():
        return LiveReporter(stream)
    return PlainReporter(stream)


def print_recap(report: RunReport, console: Any) -> None:
    from rich.table import Table

    table = Table(title="recap", title_justify="left", box=None, header_style="bold")
    for column in ("host", "ok", "changed", "failed", "skipped", "unreachable", "commands", "time"):
        table.add_column(column, justify="left" if column == "host" else "right")
    for host in sorted(report.hosts.values(), key=lambda h: h.host):
        d = host.as_dict()
        table.add_row(
            escape(d["host"]),
            f"[green]{d['ok']}[/]",
            f"[yellow]{d['changed']}[/]" if d["changed"] else "0",
            f"[red]{d['failed']}[/]" if d["failed"] else "0",
            str(d["skipped"]),
            "[magenta]yes[/]" if d["unreachable"] else "no",
            str(d["commands"]),
            f"{d['duration']:.2f}s",
        )
    console.print(table)
    for host in sorted(report.hosts.values(), key=lambda h: h.host):
        for note in host.notes:
            console.print(f"note {host.host}: {visible(note)}", markup=False, highlight=False)


def print_table(
    rows: Iterable[Sequence[Any]], columns: Sequence[str], *, title: str | None = None, stream: IO[str] | None = None
) -> None:
    """A plain table for commands such as `fleet facts` and `fleet train status`."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left", box=None, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(Text("" if v is None else visible(str(v))) for v in row))  # plain text, never markup
    _console(stream).print(table)


def print_line(text: str, *, style: str | None = None, stream: IO[str] | None = None) -> None:
    _console(stream).print(visible(text), style=style, markup=False, highlight=False)
