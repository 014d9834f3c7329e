"""The markdown table of a benchmark run: medians, ratios against fleet, and the context needed to
read them (machine, versions, date, the exact command, how each tool was set up)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from tools import FLOORS, TOOLS

MEASURE_TEXT = {
    "converge": "first run (converge)",
    "rerun": "re-run, nothing changes",
    "facts": "facts",
}


def _fmt_seconds(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _cells(samples: list[Any]) -> dict[tuple[int, str, str], list[Any]]:
    cells: dict[tuple[int, str, str], list[Any]] = defaultdict(list)
    for s in samples:
        cells[(s.hosts, s.measure, s.tool)].append(s)
    return cells


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def write_results(out: Path, results: Any, raw: Path) -> None:
    samples = results.samples
    tools = [t for t in TOOLS if any(s.tool == t for s in samples)]
    sizes = sorted({s.hosts for s in samples})
    cells = _cells(samples)
    others = [t for t in tools if t != "fleet" and t not in FLOORS] if "fleet" in tools else []
    floors = [t for t in tools if t in FLOORS] if "fleet" in tools else []
    m = results.machine
    rtt = float(results.settings.get("rtt_ms", "0") or 0)
    lines = [
        "# fleet vs Ansible vs pyinfra" + (f", {rtt:g} ms RTT (WAN mode)" if rtt else ""),
        "",
        f"Written by `bench/run.py` on {results.started}. Command: `{results.command}`",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory']}, {m['os']}, Python {m['python']}.",
        "Versions: " + "; ".join(f"{k}: {v}" for k, v in results.versions.items()) + ".",
        "",
        "Every number is the **median** wall-clock time of the whole CLI process (start to exit: what a",
        "user waits for) over *n* runs, on the same simulated fleet (real sshd hosts on loopback). This is",
        "a shared 2-core machine and single runs are noisy: read medians and ratios, not single values.",
        "Ratios are the tool's median divided by fleet's (higher = slower than fleet). Every run was",
        "checked before it counted: exit code 0, every host reporting the expected changed count (11 on",
        "converge, 0 on re-run) and no failure, identical files left behind by every tool, and facts",
        "reporting every host's architecture.",
        "",
        *(
            [
                "WAN mode: every tool reached every host through one user-space TCP proxy (bench/wanproxy.py)",
                f"that delays each direction by {rtt / 2:g} ms: each round trip costs {rtt:g} ms more than loopback.",
                "",
            ]
            if rtt
            else []
        ),
        "The paramiko floors (bench/floor.py) are what any Python tool over SSH must at least spend: the",
        "columns `fleet / paramiko-N` say how far fleet is above them (1.0x = at the floor).",
        "",
        "## Wall-clock time, median seconds (n runs)",
        "",
    ]
    header = ["hosts", "measure", *tools, *(f"{t} / fleet" for t in others), *(f"fleet / {t}" for t in floors)]
    rows = []
    for n in sizes:
        for measure in MEASURE_TEXT:
            medians: dict[str, float] = {}
            row = [str(n), MEASURE_TEXT[measure]]
            for tool in tools:
                got = cells.get((n, measure, tool), [])
                if got:
                    medians[tool] = statistics.median(s.seconds for s in got)
                    row.append(f"{_fmt_seconds(medians[tool])} ({len(got)})")
                else:
                    row.append("-")
            for tool in others:
                ok = tool in medians and medians.get("fleet")
                row.append(f"{medians[tool] / medians['fleet']:.1f}x" if ok else "-")
            for tool in floors:
                ok = tool in medians and medians.get("fleet")
                row.append(f"{medians['fleet'] / medians[tool]:.2f}x" if ok else "-")
            if any(cell != "-" for cell in row[2 : 2 + len(tools)]):
                rows.append(row)
    lines += _table(header, rows)
    lines += ["", "## SSH sessions per host (the most any host had; hosts' sshd logs: `Starting session:`)", ""]
    rows = []
    for n in sizes:
        for measure in MEASURE_TEXT:
            counts = [
                [s.sessions_per_host for s in cells.get((n, measure, t), []) if s.sessions_per_host is not None]
                for t in tools
            ]
            if any(counts):
                rows.append([str(n), MEASURE_TEXT[measure], *(str(max(c)) if c else "-" for c in counts)])
    lines += _table(["hosts", "measure", *tools], rows)
    lines += ["", "## Peak memory on the re-run, median MiB (largest process / whole process tree)", ""]
    rows = []
    for n in sizes:
        row = [str(n)]
        for tool in tools:
            got = cells.get((n, "rerun", tool), [])
            if got:
                largest = statistics.median(s.max_rss_kib for s in got) / 1024
                tree = statistics.median(s.tree_rss_kib for s in got) / 1024
                row.append(f"{largest:.0f} / {tree:.0f}")
            else:
                row.append("-")
        rows.append(row)
    lines += _table(["hosts", *tools], rows)
    rerun_commands = {s.commands_per_host for s in samples if s.tool == "fleet" and s.measure == "rerun"}
    fleet_commands = sorted(rerun_commands - {None})
    lines += [""]
    if fleet_commands:
        lines.append(
            f"fleet's remote commands per host on the re-run: {', '.join(map(str, fleet_commands))} "
            "(one request carrying the facts and every task's probe)."
        )
        lines.append("")
    lines += ["## How each tool was run", ""]
    lines += [f"- **{t}**: {TOOLS[t].how}" for t in tools]
    lines += [f"- {note}" for note in results.notes]
    lines += [
        f"- sizes above {results.settings.get('others_up_to', '50')} hosts: fleet alone (`--others-up-to`).",
        f"- forks/parallelism: {results.settings['forks']}. A tool stops repeating at a fleet size once its runs "
        f"there took more than {results.settings['budget_s']} s (`--budget`), so *n* can be smaller for slow cells.",
        f"- Raw samples (every run, with peak RSS): `bench/results/{raw.name}` (not committed).",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
