"""GPU health: the shell lines that read it (part of the facts command), pure parsers of the real
nvidia-smi and kernel-log formats, and the judge that turns a host's health into problems with
remedies. No I/O here: `fleet facts`, `fleet health`, `fleet doctor` and `fleet train` call it."""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

# The fields of `nvidia-smi --query-gpu`, in the order and `--format=csv` (header, units) that
# tests/recorded/h200-health.txt recorded on a real H200. Parsed by header name, so a driver that
# orders them differently still parses.
QUERY_FIELDS = (
    "index,name,uuid,pci.bus_id,temperature.gpu,power.draw,power.limit,clocks.sm,clocks.max.sm,"
    "clocks_event_reasons.active,ecc.mode.current,ecc.errors.corrected.volatile.total,"
    "ecc.errors.uncorrected.volatile.total,ecc.errors.uncorrected.aggregate.total,retired_pages.pending,"
    "remapped_rows.pending,remapped_rows.failure,persistence_mode,compute_mode,mig.mode.current,fan.speed,pstate"
)
XID_LINES = 20  # the newest Xid lines read from the kernel log
SMI_TIMEOUT = 20  # seconds: nvidia-smi can hang on a GPU that fell off the bus; that is a problem too

# Sections `health_smi` (the nvidia-smi found), `health_gpus` (the query) and `health_xid` (the
# log's source, then its Xid lines). The kernel log may be unreadable for the login user
# (kernel.dmesg_restrict, no journal group): then the source is `none`, never a failure.
PROBE = rf"""
s health_smi; command -v nvidia-smi 2>/dev/null
s health_gpus; if command -v nvidia-smi >/dev/null 2>&1; then
  timeout -k 5 {SMI_TIMEOUT} nvidia-smi --query-gpu={QUERY_FIELDS} --format=csv 2>&1
  [ $? = 124 ] && echo 'nvidia-smi did not answer within {SMI_TIMEOUT} s'
fi
s health_xid
if command -v nvidia-smi >/dev/null 2>&1 || [ -e /proc/driver/nvidia/version ]; then
  if dmesg >/dev/null 2>&1; then echo 'source dmesg'; dmesg 2>/dev/null | grep -a 'NVRM: Xid' | tail -n {XID_LINES}
  elif [ -n "$(timeout 10 journalctl -k -b -q -n 1 --no-pager 2>/dev/null)" ]; then
    echo 'source journal'
    timeout 20 journalctl -k -b -q --no-pager 2>/dev/null | grep -a 'NVRM: Xid' | tail -n {XID_LINES}
  else echo 'source none'; fi
fi
"""

# NVML's clock event reason bits (nvmlClocksEventReason*): why the SM clock is below its maximum.
CLOCK_EVENTS = {
    0x1: "idle",
    0x2: "applications clocks setting",
    0x4: "SW power cap",
    0x8: "HW slowdown",
    0x10: "sync boost",
    0x20: "SW thermal slowdown",
    0x40: "HW thermal slowdown",
    0x80: "HW power brake slowdown",
    0x100: "display clock setting",
}
HW_SLOWDOWN = 0x8 | 0x40 | 0x80
SW_THERMAL = 0x20


@dataclass(frozen=True)
class GpuHealth:
    index: int
    name: str
    uuid: str
    pci_bus_id: str
    temperature_c: int | None
    power_draw_w: float | None
    power_limit_w: float | None
    sm_clock_mhz: int | None
    sm_clock_max_mhz: int | None
    clock_event_reasons: int | None  # the bit mask; clock_events names its bits
    clock_events: tuple[str, ...]
    ecc_mode: str | None
    ecc_corrected_volatile: int | None
    ecc_uncorrected_volatile: int | None
    ecc_uncorrected_aggregate: int | None
    retired_pages_pending: bool | None
    remap_pending: bool | None
    remap_failure: bool | None
    persistence_mode: str | None
    compute_mode: str | None
    mig_mode: str | None
    fan_speed_pct: int | None
    pstate: str | None


@dataclass(frozen=True)
class Xid:
    code: int
    pci: str  # as the kernel wrote it, e.g. 0000:3b:00
    gpu: int | None  # the GPU at that PCI address, when nvidia-smi listed it
    detail: str
    line: str


@dataclass(frozen=True)
class HostHealth:
    smi: str | None = None  # the nvidia-smi that answered (its path: the fixes run the same one)
    gpus: tuple[GpuHealth, ...] = ()
    errors: tuple[str, ...] = ()  # what nvidia-smi said instead of a GPU row
    xid_source: str | None = None  # dmesg | journal | none (unreadable) | None (no NVIDIA driver)
    xids: tuple[Xid, ...] = ()


@dataclass(frozen=True)
class Problem:
    id: str
    text: str  # one line, e.g. `GPU3: 2 uncorrectable ECC (volatile)`
    remedy: str
    severity: str = "error"  # error: unfit to train on; warning: worth fixing, still fit
    gpu: int | None = None
    fix: tuple[str, ...] = ()  # a safe command that fixes it (argv, run as root), when there is one


# ---- parsers -------------------------------------------------------------------------------------
def _value(text: str) -> str | None:
    text = text.strip()
    return None if not text or text.startswith("[") or text in ("N/A", "Not Supported") else text


def _number(text: str) -> float | None:
    value = _value(text)
    match = re.match(r"-?\d+(\.\d+)?", value or "")
    return float(match.group()) if match else None


def _whole(text: str) -> int | None:
    number = _number(text)
    return None if number is None else int(number)


def _yes(text: str) -> bool | None:
    value = (_value(text) or "").lower()
    return {"yes": True, "no": False}.get(value)


def _mask(text: str) -> int | None:
    value = _value(text) or ""
    try:
        return int(value, 16) if value.lower().startswith("0x") else None
    except ValueError:
        return None


def parse_gpu_health(text: str) -> tuple[tuple[GpuHealth, ...], tuple[str, ...]]:
    """GPUs of `nvidia-smi --query-gpu=<QUERY_FIELDS> --format=csv`, and the lines that were not a
    GPU row (nvidia-smi's own errors, e.g. `Unable to determine the device handle for GPU...`)."""
    header: list[str] | None = None
    gpus: list[GpuHealth] = []
    errors: list[str] = []
    for row in csv.reader(text.splitlines(), skipinitialspace=True):
        if not row or not "".join(row).strip():
            continue
        if header is None and row[0].strip() == "index":
            header = [re.sub(r"\s*\[.*\]$", "", c.strip()) for c in row]
            continue
        if header is None or len(row) != len(header) or not row[0].strip().isdigit():
            errors.append(", ".join(c.strip() for c in row)[:300])
            continue
        v = dict(zip(header, (c.strip() for c in row), strict=True))
        mask = _mask(v.get("clocks_event_reasons.active", ""))
        gpus.append(
            GpuHealth(
                index=int(v["index"]),
                name=v.get("name", ""),
                uuid=v.get("uuid", ""),
                pci_bus_id=v.get("pci.bus_id", ""),
                temperature_c=_whole(v.get("temperature.gpu", "")),
                power_draw_w=_number(v.get("power.draw", "")),
                power_limit_w=_number(v.get("power.limit", "")),
                sm_clock_mhz=_whole(v.get("clocks.current.sm", "")),
                sm_clock_max_mhz=_whole(v.get("clocks.max.sm", "")),
                clock_event_reasons=mask,
                clock_events=tuple(name for bit, name in CLOCK_EVENTS.items() if mask and mask & bit),
                ecc_mode=_value(v.get("ecc.mode.current", "")),
                ecc_corrected_volatile=_whole(v.get("ecc.errors.corrected.volatile.total", "")),
                ecc_uncorrected_volatile=_whole(v.get("ecc.errors.uncorrected.volatile.total", "")),
                ecc_uncorrected_aggregate=_whole(v.get("ecc.errors.uncorrected.aggregate.total", "")),
                retired_pages_pending=_yes(v.get("retired_pages.pending", "")),
                remap_pending=_yes(v.get("remapped_rows.pending", "")),
                remap_failure=_yes(v.get("remapped_rows.failure", "")),
                persistence_mode=_value(v.get("persistence_mode", "")),
                compute_mode=_value(v.get("compute_mode", "")),
                mig_mode=_value(v.get("mig.mode.current", "")),
                fan_speed_pct=_whole(v.get("fan.speed", "")),
                pstate=_value(v.get("pstate", "")),
            )
        )
    return tuple(gpus), tuple(errors)


# `NVRM: Xid (PCI:0000:3b:00): 79, pid=..., name=..., GPU has fallen off the bus.` (older drivers
# leave out `PCI:`), after a dmesg `[  123.4]` or journal `Dec 01 12:00:00 host kernel:` prefix.
_XID = re.compile(r"NVRM: Xid \((?:PCI:)?([0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+)(?:\.\d+)?\):\s*(\d+),?\s*(.*)")


def _pci_key(address: str) -> tuple[int, ...]:
    """(domain, bus, device) of `00000000:3B:00.0` (nvidia-smi) or `0000:3b:00` (kernel log)."""
    parts = re.split(r"[:.]", address.strip())
    try:
        return tuple(int(p, 16) for p in parts[:3])
    except ValueError:
        return ()


def parse_xids(lines: Sequence[str], gpus: Sequence[GpuHealth] = ()) -> tuple[Xid, ...]:
    by_pci = {_pci_key(g.pci_bus_id): g.index for g in gpus}
    found = []
    for line in lines:
        match = _XID.search(line)
        if match:
            pci, code, detail = match.groups()
            found.append(Xid(int(code), pci, by_pci.get(_pci_key(pci)), detail.strip()[:300], line.strip()[:400]))
    return tuple(found)


def parse_health(sections: Mapping[str, str]) -> HostHealth | None:
    """The health sections of a facts command's output; None where the host has no NVIDIA driver
    or nvidia-smi at all (nothing to judge)."""
    smi = sections.get("health_smi", "").strip() or None
    xid_lines = sections.get("health_xid", "").splitlines()
    source = xid_lines[0].removeprefix("source ").strip() if xid_lines and xid_lines[0].startswith("source ") else None
    if smi is None and source is None:
        return None
    gpus, errors = parse_gpu_health(sections.get("health_gpus", "")) if smi else ((), ())
    return HostHealth(smi, gpus, errors, source, parse_xids(xid_lines[1:], gpus))


# ---- judging -------------------------------------------------------------------------------------
DRAIN = (
    "drain it first (Slurm: scontrol update nodename=<node> state=drain reason=gpu-health; fleet: fleet train stop),"
)
RESET = "then sudo nvidia-smi -r -i {i} (no process may hold the GPU) or reboot the node"
HARDWARE = "open a hardware ticket (RMA) with the GPU's serial (nvidia-smi -q -i {i}) and an nvidia-bug-report.sh log"
RESTART = "usually the application (restart it); if it repeats with known-good code, run dcgmi diag -r 3"

# NVIDIA's Xid catalog (docs.nvidia.com/deploy/xid-errors): what the common codes mean, whether
# the GPU is still fit to train on ("error": not), what to do.
XID_CATALOG: dict[int, tuple[str, str, str]] = {
    13: ("graphics engine exception", "warning", RESTART),
    31: ("GPU memory page fault", "warning", RESTART),
    43: ("GPU stopped processing", "warning", "the application's channel was reset: restart the application"),
    45: ("preemptive cleanup after earlier errors", "warning", "look at the Xid before it; restart the application"),
    48: ("double-bit ECC error", "error", f"{DRAIN} {RESET}; if it repeats, {HARDWARE}"),
    61: ("internal micro-controller breakpoint", "error", f"{DRAIN} {RESET}"),
    62: ("internal micro-controller halt", "error", f"{DRAIN} {RESET}"),
    63: ("row remap or page retirement recorded", "warning", f"a remap is pending: when idle, {DRAIN} {RESET}"),
    64: ("row remap or page retirement recording failure", "error", f"{DRAIN} {RESET}; if it repeats, {HARDWARE}"),
    74: (
        "NVLink error",
        "error",
        f"see nvidia-smi nvlink -s/-e for the link; {DRAIN} {RESET}; if it repeats, {HARDWARE}",
    ),
    79: ("GPU has fallen off the bus", "error", f"{DRAIN} reboot; check PCIe seating, power, cooling; then {HARDWARE}"),
    92: (
        "high single-bit ECC error rate",
        "warning",
        f"watch ecc.errors.corrected; if it keeps rising, {DRAIN} {RESET}",
    ),
    94: (
        "contained ECC error",
        "warning",
        f"the application that hit it stopped: restart it; when idle, {DRAIN} {RESET}",
    ),
    95: ("uncontained ECC error", "error", f"all applications on the GPU are hit: {DRAIN} {RESET}; then {HARDWARE}"),
    119: ("GSP RPC timeout", "error", f"{DRAIN} {RESET}; update the driver if it repeats"),
    120: ("GSP error", "error", f"{DRAIN} {RESET}; update the driver if it repeats"),
    121: ("C2C (chip-to-chip) link error", "error", f"{DRAIN} reboot the node; if it repeats, {HARDWARE}"),
    140: ("unrecovered ECC error", "error", f"{DRAIN} {RESET}; if it repeats, {HARDWARE}"),
    154: (
        "GPU recovery action changed",
        "error",
        f"the line names the action (reset, reboot, drain and reset): {DRAIN} do it",
    ),
}
UNKNOWN_XID = ("see NVIDIA's Xid catalog", "warning", "look the code up in NVIDIA's Xid catalog")


def _gpu_problems(g: GpuHealth) -> list[Problem]:
    at, out = f"GPU{g.index}", []

    def add(id: str, text: str, remedy: str, severity: str = "error", fix: tuple[str, ...] = ()) -> None:
        out.append(Problem(id, f"{at}: {text}", remedy.replace("{i}", str(g.index)), severity, g.index, fix))

    if g.ecc_uncorrected_volatile:
        add(
            "ecc-uncorrectable",
            f"{g.ecc_uncorrected_volatile} uncorrectable ECC (volatile)",
            f"{DRAIN} {RESET}; if it comes back, {HARDWARE}",
        )
    if g.remap_failure:
        add("remap-failure", "row remapping failed", HARDWARE)
    if g.remap_pending:
        add("remap-pending", "row remap pending (needs a GPU reset)", f"{DRAIN} {RESET}")
    if g.retired_pages_pending:
        add("retire-pending", "page retirement pending (needs a GPU reset)", f"{DRAIN} {RESET}")
    mask = g.clock_event_reasons or 0
    if mask & HW_SLOWDOWN:
        which = ", ".join(name for bit, name in CLOCK_EVENTS.items() if bit & HW_SLOWDOWN & mask)
        add(
            "hw-slowdown",
            f"clocks held down by {which} ({g.temperature_c} C, {g.power_draw_w} W)",
            "check cooling (fans, air flow, inlet temperature) and power (PSUs, cabling, power brake): "
            "nvidia-smi -q -i {i} -d PERFORMANCE,TEMPERATURE,POWER",
        )
    elif mask & SW_THERMAL:
        add("sw-thermal", f"SW thermal slowdown ({g.temperature_c} C)", "the GPU runs hot: check cooling", "warning")
    if g.mig_mode == "Enabled":
        add("mig-on", "MIG mode is on", f"{DRAIN} sudo nvidia-smi -i {{i}} -mig 0, {RESET}")
    if g.compute_mode and g.compute_mode != "Default":
        add(
            "compute-mode",
            f"compute mode {g.compute_mode} (the trainer and vLLM share a GPU)",
            "sudo nvidia-smi -i {i} -c DEFAULT (fleet doctor --fix)",
            fix=("-i", str(g.index), "-c", "DEFAULT"),
        )
    if g.ecc_mode == "Disabled":
        add("ecc-off", "ECC is disabled", "sudo nvidia-smi -i {i} -e 1, then reboot (drain first)", "warning")
    elif g.ecc_uncorrected_aggregate and not g.ecc_uncorrected_volatile:
        add(
            "ecc-history",
            f"{g.ecc_uncorrected_aggregate} uncorrectable ECC in its lifetime (aggregate)",
            "nothing now; watch for a remap pending or failure",
            "warning",
        )
    if g.persistence_mode == "Disabled":
        add(
            "persistence-off",
            "persistence mode is off (slow CUDA start, settings lost when idle)",
            "sudo nvidia-smi -i {i} -pm 1 (fleet doctor --fix), or run nvidia-persistenced",
            "warning",
            fix=("-i", str(g.index), "-pm", "1"),
        )
    return out


def _xid_problem(x: Xid) -> Problem:
    meaning, severity, remedy = XID_CATALOG.get(x.code, UNKNOWN_XID)
    at = f"GPU{x.gpu}" if x.gpu is not None else f"PCI {x.pci}"
    remedy = remedy.replace("{i}", str(x.gpu) if x.gpu is not None else "<index>")
    return Problem(f"xid-{x.code}", f"{at}: Xid {x.code} ({meaning}) in the kernel log", remedy, severity, x.gpu)


def judge(
    health: HostHealth | None, *, expected_gpus: int | None = None, gpu_error: str | None = None
) -> list[Problem]:
    """Every problem of one host, errors first. `expected_gpus` (inventory) makes a missing GPU one."""
    found: list[Problem] = []
    gpus = health.gpus if health else ()
    for line in health.errors if health else ():
        found.append(
            Problem(
                "smi-error",
                f"nvidia-smi: {line}",
                "nvidia-smi -q shows which GPU; one that does not answer needs a reset or a reboot",
            )
        )
    if expected_gpus is not None and len(gpus) < expected_gpus:
        seen = ", ".join(f"GPU{g.index}" for g in gpus) or "none"
        why = f" ({gpu_error})" if gpu_error and not gpus else ""
        found.append(
            Problem(
                "gpu-missing",
                f"{len(gpus)} of {expected_gpus} GPUs found (seen: {seen}){why}",
                "look for Xid 79 in the kernel log and the GPUs in lspci | grep -i nvidia; "
                f"{DRAIN} reboot; if one stays missing, {HARDWARE.replace('{i}', '<index>')}",
            )
        )
    for g in gpus:
        found += _gpu_problems(g)
    if health and health.gpus and health.xid_source == "none":
        unread = "the kernel log is not readable: Xid errors were not checked"
        how = "run as root, or let the login user read it (group adm or systemd-journal, or kernel.dmesg_restrict=0)"
        found.append(Problem("kernel-log-unreadable", unread, how, "warning"))
    seen_codes: set[tuple[int, int | None]] = set()
    for x in reversed(health.xids if health else ()):  # newest first, one problem per code and GPU
        if (x.code, x.gpu) not in seen_codes:
            seen_codes.add((x.code, x.gpu))
            found.append(_xid_problem(x))
    smi = (health.smi if health else None) or "nvidia-smi"
    found = [replace(p, fix=(smi, *p.fix)) if p.fix else p for p in found]  # the nvidia-smi that was judged
    return sorted(found, key=lambda p: p.severity != "error")


def errors(problems: Sequence[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def summary(problems: Sequence[Problem]) -> str:
    """`ok`, or the first problem (and how many more) for a table column."""
    bad = errors(problems)
    if not bad:
        return "ok" if not problems else f"ok ({len(problems)} warning(s))"
    return bad[0].text + (f" (+{len(bad) - 1} more)" if len(bad) > 1 else "")


def expected_gpus(hostvars: Mapping[str, object]) -> int | None:
    """The inventory's `expected_gpus` for a host; a bad value is bad input, not a silent default."""
    value = hostvars.get("expected_gpus")
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not str(value).isdigit():
        raise ValueError(f"expected_gpus must be a whole number of GPUs, not {value!r}")
    return int(str(value))


# ---- during a run: what changed since the launch -------------------------------------------------
def baseline(health: HostHealth | None) -> dict[str, object]:
    """What a launch records (in job.json) to tell later whether a GPU turned sick during the run."""
    if health is None:
        return {}
    return {
        "ecc": {g.uuid: [g.ecc_uncorrected_volatile or 0, g.ecc_corrected_volatile or 0] for g in health.gpus},
        "last_xid": health.xids[-1].line if health.xids else None,
    }


def turned_sick(base: Mapping[str, object], health: HostHealth | None) -> list[str]:
    """New Xid lines and rising ECC counts since `base` was recorded; empty without a baseline."""
    if not base or health is None:
        return []
    out = []
    ecc = base.get("ecc") if isinstance(base.get("ecc"), Mapping) else {}
    for g in health.gpus:
        before = ecc.get(g.uuid) if isinstance(ecc, Mapping) else None
        if not isinstance(before, list) or len(before) != 2:
            continue
        if (g.ecc_uncorrected_volatile or 0) > before[0]:
            out.append(f"GPU{g.index}: uncorrectable ECC {before[0]} -> {g.ecc_uncorrected_volatile} since the launch")
        elif (g.ecc_corrected_volatile or 0) > before[1]:
            out.append(f"GPU{g.index}: corrected ECC {before[1]} -> {g.ecc_corrected_volatile} since the launch")
    lines = [x.line for x in health.xids]
    last = base.get("last_xid")
    # the launch's last line gone from the window (many new lines, or a reboot): all are new
    new = health.xids[lines.index(last) + 1 :] if last in lines else health.xids
    for x in new:
        out.append(_xid_problem(x).text.replace(" in the kernel log", " since the launch"))
    return out
