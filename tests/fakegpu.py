"""A stand-in GPU for sshd test hosts: `nvidia-smi` and `dmesg` programs on the host's PATH that
replay output recorded on a real H200 (tests/recorded/h200-*.txt), exactly as recorded or with
values changed to make a sick GPU (each test says which). The fake answers only the commands it
has a recording for and fails loudly on any other, so fleet cannot ask something it never saw
answered. `-pm 1` and `-c DEFAULT` change its state as the real one does (for `doctor --fix`)."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from conftest import RECORDED

from fleet.health import QUERY_FIELDS


def recorded_trace(name: str) -> dict[str, str]:
    """Each command of a recorded `set -x` session (`+ command` lines) and what it printed."""
    outputs: dict[str, str] = {}
    command = None
    for line in (RECORDED / name).read_text().splitlines():
        if line.startswith("+ "):
            command = line[2:]
            outputs[command] = ""
        elif command is not None:
            outputs[command] += line + "\n"
    return outputs


PROBE_REC = recorded_trace("h200-host-probe.txt")
HEALTH_REC = recorded_trace("h200-health.txt")
HEALTH_QUERY = f"--query-gpu={QUERY_FIELDS} --format=csv"
FACTS_QUERY = "--query-gpu=index,name,driver_version,memory.total,memory.used,compute_cap --format=csv,noheader,nounits"
H200_TABLE = PROBE_REC["nvidia-smi"]
H200_FACTS_CSV = PROBE_REC[f"nvidia-smi {FACTS_QUERY}"]
H200_HEALTH_CSV = HEALTH_REC[f"nvidia-smi {HEALTH_QUERY}"]
H200_NVRM_LINES = HEALTH_REC["grep -i -m5 'xid\\|NVRM'"]  # the real kernel log: NVRM lines, no Xid

FAKE_SMI = r"""#!/usr/bin/env python3
import csv, io, os, sys
here = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
with open(os.path.join(here, "calls.log"), "a") as log:
    log.write(f"{os.geteuid()} {' '.join(args)}\n")
replies = {"": "table.txt", %(facts)r: "facts.csv", %(health)r: "health.csv"}
name = replies.get(" ".join(args))
if name:
    sys.stdout.write(open(os.path.join(here, name)).read())
    sys.exit(0)
column = {"-pm": ("persistence_mode", {"1": "Enabled", "0": "Disabled"}),
          "-c": ("compute_mode", {"DEFAULT": "Default"})}
if len(args) == 4 and args[0] == "-i" and args[2] in column and args[3] in column[args[2]][1]:
    field, values = column[args[2]]
    path = os.path.join(here, "health.csv")
    rows = list(csv.reader(io.StringIO(open(path).read()), skipinitialspace=True))
    at = [c.strip() for c in rows[0]].index(field)
    for row in rows[1:]:
        if row[0].strip() == args[1]:
            row[at] = values[args[3]]
    with open(path, "w") as out:
        out.write("\n".join(", ".join(r) for r in rows) + "\n")
    print(f"{field} set to {values[args[3]]} for GPU {args[1]}.")
    sys.exit(0)
print(f"fake nvidia-smi: no recorded output for: {' '.join(args)}", file=sys.stderr)
sys.exit(9)
"""


def install_fake_gpu(bin_dir: Path, *, health_csv: str = H200_HEALTH_CSV, kernel_log: str = H200_NVRM_LINES) -> Path:
    """Write the fake `nvidia-smi` and `dmesg` into bin_dir (readable by every test user)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "table.txt").write_text(H200_TABLE)
    (bin_dir / "facts.csv").write_text(H200_FACTS_CSV)
    (bin_dir / "health.csv").write_text(health_csv)
    (bin_dir / "kernel.log").write_text(kernel_log)
    (bin_dir / "calls.log").write_text("")
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI % {"facts": FACTS_QUERY, "health": HEALTH_QUERY})
    dmesg = bin_dir / "dmesg"
    dmesg.write_text(f"#!/bin/sh\ncat {shlex.quote(str(bin_dir / 'kernel.log'))}\n")
    for path in (smi, dmesg):
        path.chmod(0o755)
    for path in bin_dir.iterdir():
        path.chmod(path.stat().st_mode | 0o666 if path.name.endswith((".csv", ".log")) else path.stat().st_mode)
    return bin_dir


def calls(bin_dir: Path) -> list[str]:
    return (bin_dir / "calls.log").read_text().splitlines()


def sick(csv_text: str, **changes: str) -> str:
    """Derived, not recorded: the recorded health CSV with some columns of GPU 0 changed, in the
    same format (e.g. sick(csv, **{"ecc.errors.uncorrected.volatile.total": "2"}))."""
    header, row, *rest = csv_text.splitlines()
    names = [c.strip().split(" [")[0] for c in header.split(",")]
    values = [c.strip() for c in row.split(",")]
    for name, value in changes.items():
        values[names.index(name)] = value
    return "\n".join([header, ", ".join(values), *rest]) + "\n"


def remove(bin_dir: Path) -> None:
    shutil.rmtree(bin_dir, ignore_errors=True)
