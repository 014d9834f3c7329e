"""Host facts from one batched command: system, NVIDIA driver/CUDA/GPUs, tools, and the
training stack that the setup playbook records in ~/.fleet/facts.d/*.json."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from .factuse import ALL_GROUPS, FIELD_GROUPS
from .health import PROBE as HEALTH_PROBE
from .health import HostHealth, parse_health
from .model import CommandResult, FleetError
from .probe import Probe, observe

if TYPE_CHECKING:
    from .connection import Connection

# One section per marker; every command's failure is tolerated so one missing tool never
# costs the others. nvidia-smi's header holds the CUDA version the driver supports. Files are read
# with the shell's own `read` (`l FILE END`) and missing tools cost no process: this runs in every
# play's first request on every host, where each program started is ~1 ms of the host's CPU. The
# system group collects its output (`a`, `l`) and writes it at the next `s` or `o`: one write, so
# one SSH packet for the controller to take apart, not one per line.
# The groups are those of fleet/factuse.py: a play gathers the ones it names.
GROUP_PROBES = {
    # Not a raw string: `\n` and `\t` here are the shell's newline and tab characters.
    "system": """
_o= _n='\n'
o() { printf %s "$_o"; _o=; }
a() { _o="$_o$_n@@$1$_n"; }
s() { a "$1"; o; }
l() { while IFS= read -r _l || [ -n "$_l" ]; do _o="$_o$_l$2"; done <"$1"; }
a hostname; l /proc/sys/kernel/hostname "$_n" 2>/dev/null || { o; hostname 2>/dev/null; }
a arch; l /proc/sys/kernel/arch "$_n" 2>/dev/null || { o; uname -m; }
a kernel; l /proc/sys/kernel/osrelease "$_n" 2>/dev/null || { o; uname -r; }
a os; l /etc/os-release "$_n" 2>/dev/null
a mem; while IFS= read -r _l; do case $_l in MemTotal:*) _o="$_o$_l$_n"; break; esac; done </proc/meminfo
a custom; for _f in "$HOME"/.fleet/facts.d/*.json; do
  [ -f "$_f" ] && _b=${_f##*/} && _o="$_o${_b%.json}\t" && l "$_f" '' && _o="$_o$_n"
done
""",
    "resources": r"""s cpus; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN
s disk; df -Pk "$HOME" 2>/dev/null
""",
    "tools": r"""s python; python3 --version 2>&1
s uv; PATH="$HOME/.local/bin:$HOME/.cargo/bin:$PATH" uv --version 2>/dev/null
""",
    "gpu": r"""_q=index,name,driver_version,memory.total,memory.used,compute_cap
s smi; command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi 2>&1 | head -n 5
s gpus; command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=$_q --format=csv,noheader,nounits 2>&1
s nvcc; if command -v nvcc >/dev/null 2>&1 && nvcc --version; then :
elif [ -x /usr/local/cuda/bin/nvcc ]; then /usr/local/cuda/bin/nvcc --version; fi 2>/dev/null
"""
    + HEALTH_PROBE,
}


# The probe leaves nothing behind in the shell it ran in, so a batch runs it without a subshell.
_CLEANUP = "unset -f o a s l; unset _o _n _l _f _b _q\n"


def probe_script(groups: frozenset[str] = ALL_GROUPS) -> str:
    """The facts probe of these groups (system always: it defines the helpers)."""
    return "".join(GROUP_PROBES[g] for g in GROUP_PROBES if g == "system" or g in groups) + "s end\n" + _CLEANUP


PROBE = probe_script()


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    memory_total_mib: int
    memory_used_mib: int
    compute_capability: str

    @property
    def memory_free_mib(self) -> int:
        return self.memory_total_mib - self.memory_used_mib


@dataclass(frozen=True)
class Facts:
    hostname: str = ""
    arch: str = ""
    kernel: str = ""
    os_id: str = ""
    os_version: str = ""
    os_name: str = ""
    cpus: int = 0
    memory_bytes: int = 0
    disk_free_bytes: int = 0
    python: str | None = None
    uv: str | None = None
    driver: str | None = None
    cuda: str | None = None  # the CUDA version the driver supports (nvidia-smi header)
    cuda_toolkit: str | None = None  # nvcc's release, when a toolkit is installed
    gpus: tuple[GPU, ...] = ()
    gpu_error: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)
    health: HostHealth | None = None  # None: no NVIDIA driver or nvidia-smi (fleet.health judges it)

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    @property
    def gpu_name(self) -> str | None:
        return self.gpus[0].name if self.gpus else None

    @property
    def stack(self) -> dict[str, Any]:
        return self.custom.get("stack", {})

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["gpu_count"] = self.gpu_count
        out["gpu_name"] = self.gpu_name
        out["gpus"] = [asdict(g) | {"memory_free_mib": g.memory_free_mib} for g in self.gpus]
        return out


def sections(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    name = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("@@"):
            if name:
                out[name] = "\n".join(lines).strip()
            name, lines = line[2:].strip(), []
        elif name:
            lines.append(line)
    if name:
        out[name] = "\n".join(lines).strip()
    return out


def parse_os_release(text: str) -> dict[str, str]:
    import shlex

    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            try:
                parts = shlex.split(value)
            except ValueError:
                parts = [value]
            values[key.strip()] = parts[0] if parts else ""
    return values


def parse_gpu_csv(text: str) -> tuple[tuple[GPU, ...], str | None]:
    """Rows of `nvidia-smi --query-gpu=index,name,driver_version,memory.total,memory.used,
    compute_cap --format=csv,noheader,nounits`, plus the driver version they report."""
    gpus: list[GPU] = []
    driver = None
    for row in csv.reader(text.splitlines(), skipinitialspace=True):
        if len(row) != 6 or not row[0].strip().isdigit():
            continue
        index, name, drv, total, used, cap = (c.strip() for c in row)
        driver = driver or drv
        gpus.append(GPU(int(index), name, _int(total), _int(used), cap))
    return tuple(gpus), driver


def _int(text: str) -> int:
    match = re.search(r"\d+", text)
    return int(match.group()) if match else 0


_SMI_HEADER = re.compile(r"Driver Version:\s*([\d.]+)\s+CUDA Version:\s*([\d.]+)")
_NVCC = re.compile(r"release\s+([\d.]+)")


def parse_facts(text: str) -> Facts:
    sec = sections(text)
    osr = parse_os_release(sec.get("os", ""))
    gpus, gpu_driver = parse_gpu_csv(sec.get("gpus", ""))
    header = _SMI_HEADER.search(sec.get("smi", ""))
    gpu_error = None
    smi = sec.get("smi", "")
    if smi and not gpus:
        gpu_error = smi.splitlines()[0].strip()[:200]
    disk_lines = sec.get("disk", "").strip().splitlines()
    disk_fields = disk_lines[-1].split() if disk_lines else []  # df's header, then the filesystem
    mem = re.search(r"(\d+)", sec.get("mem", ""))
    python = sec.get("python", "")
    uv = sec.get("uv", "")
    nvcc = _NVCC.search(sec.get("nvcc", ""))
    custom: dict[str, Any] = {}
    for line in sec.get("custom", "").splitlines():
        key, _, body = line.partition("\t")
        try:
            custom[key] = json.loads(body)
        except json.JSONDecodeError:
            custom[key] = {"error": "unreadable JSON"}
    return Facts(
        hostname=sec.get("hostname", ""),
        arch=sec.get("arch", ""),
        kernel=sec.get("kernel", ""),
        os_id=osr.get("ID", ""),
        os_version=osr.get("VERSION_ID", ""),
        os_name=osr.get("PRETTY_NAME", ""),
        cpus=_int(sec.get("cpus", "0")),
        memory_bytes=int(mem.group(1)) * 1024 if mem else 0,
        disk_free_bytes=int(disk_fields[3]) * 1024 if len(disk_fields) > 3 and disk_fields[3].isdigit() else 0,
        python=python.split()[-1] if python.startswith("Python") else None,
        uv=uv.split()[1] if uv.startswith("uv ") else None,
        driver=(header.group(1) if header else None) or gpu_driver,
        cuda=header.group(2) if header else None,
        cuda_toolkit=nvcc.group(1) if nvcc else None,
        gpus=gpus,
        gpu_error=gpu_error,
        custom=custom,
        health=parse_health(sec),
    )


def _parse_result(result: CommandResult) -> Facts:
    return parse_facts(result.stdout)


FACTS_TIMEOUT = 60.0
FACTS_PROBE = Probe(PROBE, _parse_result, inline=True)


def facts_timeout(groups: frozenset[str]) -> float | None:
    """The facts probe's time limit: FACTS_TIMEOUT when it starts programs that can hang (nvidia-smi
    on a failing GPU, df on a dead network home, python3, uv); none for the system group alone,
    shell builtins reading /proc and /etc, so a play's first request then needs no `timeout`
    program on the host (~1.8 ms of its CPU) unless a task's probe has a limit of its own."""
    return FACTS_TIMEOUT if groups - {"system"} else None


def facts_probe(groups: frozenset[str]) -> Probe[Facts]:
    """The facts probe of some groups (fleet/factuse.py); the fields of the others keep their defaults
    in what it gives: show them only through `PartialFacts` or `facts_view`."""
    return FACTS_PROBE if groups >= ALL_GROUPS else Probe(probe_script(groups), _parse_result, inline=True)


def merged(old: Facts, new: Facts, groups: frozenset[str]) -> Facts:
    """old with the fields of `groups` taken from new (gathered later in the run, for a play that
    names more groups than the plays before it)."""
    return replace(old, **{f.name: getattr(new, f.name) for f in fields(Facts) if FIELD_GROUPS[f.name] in groups})


class NotGathered(FleetError):
    """A fact of a group the play did not gather was used: fail where it is used, never read it empty."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"fact {name!r} was not gathered: a play gathers the facts it names (`facts.{name}` in a template; "
            "Action.facts_used for an action that reads ctx.facts in Python), and nothing here named it"
        )


class PartialFacts:
    """Facts of some groups, as an action sees them: a field of another group raises NotGathered."""

    def __init__(self, facts: Facts, groups: frozenset[str]) -> None:
        self._facts, self._groups = facts, groups

    def __getattr__(self, name: str) -> Any:
        if FIELD_GROUPS.get(name, "system") not in self._groups:
            raise NotGathered(name)
        return getattr(self._facts, name)


class FactsView(dict):  # type: ignore[type-arg]
    """Facts as templates see them: a key of a group not gathered raises NotGathered (not a
    KeyError, which Jinja would turn into an undefined value)."""

    def __missing__(self, key: Any) -> Any:
        if key in FIELD_GROUPS:
            raise NotGathered(str(key))
        raise KeyError(key)


def facts_view(facts: Facts, groups: frozenset[str]) -> FactsView:
    """The template view (strings marked as data: facts come from the host, never templated)."""
    from .templating import unsafe

    shown = facts.as_dict()
    return FactsView({k: unsafe(v) for k, v in shown.items() if FIELD_GROUPS.get(k, "system") in groups})


def gather_facts(conn: Connection) -> Facts:
    """Facts of one host: one remote command."""
    return observe(FACTS_PROBE, conn.run(FACTS_PROBE.script, timeout=FACTS_TIMEOUT, observe_only=True, plain=True))


def with_overrides(facts: Facts, overrides: Mapping[str, Any] | None) -> Facts:
    """The facts with some fields replaced (host var `facts_override`).

    A dry-run and test aid: it lets `--check` rehearse GPU-only steps on a host without the GPU,
    with values recorded on a real GPU machine. Never set it for real nodes."""
    if not overrides:
        return facts
    if not isinstance(overrides, Mapping):
        raise FleetError("facts_override must be a mapping of fact names to values")
    known = {f.name for f in fields(Facts)}
    unknown = sorted(set(map(str, overrides)) - known)
    if unknown:
        raise FleetError(f"facts_override: unknown fact {unknown[0]!r} (known: {', '.join(sorted(known))})")
    values = dict(overrides)
    if "gpus" in values:
        gpu_fields = {f.name for f in fields(GPU)}
        try:
            values["gpus"] = tuple(
                g if isinstance(g, GPU) else GPU(**{k: v for k, v in dict(g).items() if k in gpu_fields})
                for g in values["gpus"] or ()
            )
        except (TypeError, ValueError) as exc:
            raise FleetError(f"facts_override: gpus: {exc}") from None
    for name in ("driver", "cuda", "cuda_toolkit", "python", "uv"):
        if values.get(name) is not None:
            values[name] = str(values[name])  # YAML reads 12.8 as a number; facts keep version text
    return replace(facts, **values)
