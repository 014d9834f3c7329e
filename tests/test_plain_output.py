"""Off a terminal fleet writes its tables and lines itself, without loading rich (tens of ms at
start-up, a few ms a host in the recap): the text must be exactly what rich writes there."""

from __future__ import annotations

import io
import itertools
import random
import string

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fleet.model import RunReport, Status, TaskResult
from fleet.report import PlainReporter, _console, _PlainConsole, plain_table, print_recap


def rich_text(rows, columns, right, title) -> str:
    buf = io.StringIO()
    table = Table(title=title, title_justify="left", box=None, header_style="bold")
    for i, column in enumerate(columns):
        table.add_column(column, justify="right" if i in right else "left", overflow="fold")
    for row in rows:
        table.add_row(*map(Text, row))
    Console(file=buf, highlight=False, soft_wrap=True, width=240, emoji=False).print(table)
    return buf.getvalue()


def test_plain_tables_are_rich_tables_byte_for_byte():
    rng = random.Random(7)
    words = string.ascii_letters + string.digits + " -_.:/[]()=,"
    laid_out = 0
    for _ in range(600):
        columns = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 12))) for _ in range(rng.randint(1, 9))]
        size = rng.choice([3, 10, 30, 60])
        rows = [
            ["".join(rng.choices(words, k=rng.randint(0, size))) for _ in columns] for _ in range(rng.randint(0, 6))
        ]
        right = {i for i in range(len(columns)) if rng.random() < 0.5}
        title = rng.choice([None, "recap", "facts of 3 host(s)", "x" * rng.randint(1, 80)])
        text = plain_table(rows, columns, right=right, title=title)
        if text is not None:  # None: rich lays it out (a cell it would change, a table too wide)
            laid_out += 1
            assert text == rich_text(rows, columns, right, title), (rows, columns, right, title)
    assert laid_out > 300
    assert plain_table([["a\tb"]], ["x"]) is None and plain_table([["é"]], ["x"]) is None
    assert plain_table([["x" * 300]], ["x"]) is None and plain_table([[" padded"]], ["x"]) is None


def test_plain_lines_are_rich_lines():
    for text in ("plain", "  spaced  ", "a:x:b [bold]not markup[/]", "two\nlines", "", "tab\there", "é ≠"):
        plain, rich = io.StringIO(), io.StringIO()
        _PlainConsole(plain).print(text, markup=False, highlight=False, style="bold")
        _console(rich).print(text, markup=False, highlight=False, style="bold")
        assert plain.getvalue() == rich.getvalue(), text


def test_the_recap_off_a_terminal_is_the_rich_recap():
    report = RunReport()
    for name, statuses in (("node-01", [Status.OK, Status.CHANGED]), ("gh200-rack01-node07", [Status.FAILED])):
        host = report.host(name)
        host.commands, host.duration = 3, 1.234
        host.results = [TaskResult(host=name, task="t", action="command", status=s) for s in statuses]
    report.host("down").unreachable = "connection refused"
    report.log_dir = "/tmp/runs/x"
    for names in itertools.permutations(["node-01", "down"]):  # order of arrival does not matter
        report.hosts = {n: report.hosts[n] for n in [*names, "gh200-rack01-node07"]}
        plain, rich = io.StringIO(), io.StringIO()
        print_recap(report, _PlainConsole(plain))
        print_recap(report, _console(rich))
        assert plain.getvalue() == rich.getvalue()
        assert " down                  0        0       0        0          yes  " in plain.getvalue()
    reporter = PlainReporter(io.StringIO())
    assert not reporter.terminal and "console" not in vars(reporter)  # rich was not even asked
