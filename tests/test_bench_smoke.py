"""The benchmark harness still runs end to end (fleet only, 2 hosts, 1 run), so it cannot rot.
Nothing here is timed: speed is measured by bench/run.py itself, never asserted in tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ssh

REPO = Path(__file__).resolve().parent.parent


def test_bench_harness_writes_a_results_table(tmp_path):
    out, raw_dir = tmp_path / "RESULTS.md", tmp_path / "results"
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--tools", "fleet,paramiko-1,paramiko-look", "--hosts", "2",
         "--repeat", "1", "--out", str(out), "--json-dir", str(raw_dir)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr

    table = out.read_text()
    for measure in ("first run (converge)", "re-run, nothing changes", "facts"):
        row = next(line for line in table.splitlines() if line.startswith(f"| 2 | {measure} |"))
        seconds = row.split("|")[3].split()[0]
        assert float(seconds) > 0, row
    assert "fleet's remote commands per host on the re-run: 1" in table

    (raw_file,) = raw_dir.glob("bench-*.json")
    samples = json.loads(raw_file.read_text())["samples"]
    fleet = {s["measure"]: s for s in samples if s["tool"] == "fleet"}
    floor = {s["measure"]: s for s in samples if s["tool"] == "paramiko-1"}
    look = {s["measure"]: s for s in samples if s["tool"] == "paramiko-look"}
    assert sorted(fleet) == ["converge", "facts", "rerun"] and sorted(floor) == ["facts", "rerun"]
    assert sorted(look) == ["rerun"] and look["rerun"]["commands_per_host"] == 1  # fleet's own request, sent raw
    assert all(s["hosts"] == 2 and s["max_rss_kib"] > 0 for s in samples)
    # Counted from the hosts' sshd logs: a converged re-run and facts cost one SSH session per host
    # (one plain exec channel, no agent), like the one-command floor; the first run two (that first
    # look, then the agent that makes the changes).
    assert fleet["rerun"]["sessions_per_host"] == 1 and fleet["rerun"]["commands_per_host"] == 1
    assert fleet["facts"]["sessions_per_host"] == 1
    assert floor["rerun"]["sessions_per_host"] == 1 and look["rerun"]["sessions_per_host"] == 1
    assert fleet["converge"]["sessions_per_host"] == 2
