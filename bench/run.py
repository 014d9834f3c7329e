"""Benchmark fleet against Ansible (ansible-core) and pyinfra on one simulated fleet, in one run.

    sudo python bench/run.py --hosts 1,10,50 --repeat 5

Starts the largest fleet asked for (real sshd processes on loopback, one login user each, from
tests/sshfleet.py), and for every fleet size and tool measures the whole CLI process a user waits
for: a first run of the 12-task setup (converge), a re-run that must change nothing, and facts
gathering. Every run is checked (exit code, per-host changed/failed counts, files left behind
identical across tools) before it counts. Writes a markdown table (bench/RESULTS.md) and the raw
samples as JSON (bench/results/). See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from measure import Measured, run_measured  # noqa: E402
from report import write_results  # noqa: E402
from tools import TOOLS, BaselineFleetTool, BenchError, Fleet, FleetTool, Host, HostOutcome, Tool  # noqa: E402

MEASURES = ("converge", "rerun", "facts")
SESSION_LINE = b"Starting session:"  # sshd, LogLevel VERBOSE: one line per SSH session (channel)
RUN_TIMEOUT = 1800.0  # seconds; a run that takes longer is a failure, not a data point


def load_sshfleet() -> object:
    """tests/sshfleet.py by path: the same real-sshd hosts the test suite uses."""
    spec = importlib.util.spec_from_file_location("sshfleet", REPO / "tests" / "sshfleet.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["sshfleet"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@dataclass
class Sample:
    tool: str
    hosts: int
    measure: str
    repeat: int
    seconds: float
    max_rss_kib: int
    tree_rss_kib: int
    commands_per_host: int | None = None
    sessions_per_host: int | None = None  # the most any host had (from the hosts' sshd logs)
    rtt_ms: float = 0.0


@dataclass
class Results:
    command: str
    started: str
    machine: dict[str, str]
    versions: dict[str, str]
    settings: dict[str, str]
    samples: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ---- checks ------------------------------------------------------------------------------------
def tree_digest(folder: Path) -> list[tuple[str, str, str]]:
    """Every path under folder with its mode and content hash: what a tool left behind."""
    out = []
    for path in sorted(folder.rglob("*")):
        kind = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        out.append((str(path.relative_to(folder)), oct(path.stat().st_mode & 0o7777), kind))
    return out


def check_outcomes(tool: Tool, measure: str, got: dict[str, HostOutcome], hosts: Sequence[Host]) -> int | None:
    """Fail loudly unless every host did exactly what the measure expects; return fleet's
    per-host command count where the tool reports it."""
    names = {h.name for h in hosts}
    if set(got) != names:
        raise BenchError(f"{tool.name} {measure}: reported hosts {sorted(got)[:5]}…, expected {len(names)} hosts")
    want = tool.converge_changes if measure == "converge" else 0
    for name, outcome in got.items():
        if outcome.failed or outcome.unreachable or outcome.changed != want:
            raise BenchError(f"{tool.name} {measure}: {name} reported {outcome}, expected changed={want}, no failure")
    commands = {o.commands for o in got.values()}
    if len(commands) != 1 or None in commands:
        return None
    count = commands.pop()
    if measure == "rerun" and tool.rerun_commands is not None and count != tool.rerun_commands:
        raise BenchError(
            f"{tool.name} rerun: {count} remote commands per host, expected {tool.rerun_commands} "
            "(one per unchanged task plus facts)"
        )
    return count


def check_facts(tool: Tool, got: dict[str, str], hosts: Sequence[Host]) -> None:
    arch = platform.machine()
    bad = {h.name: got.get(h.name) for h in hosts if got.get(h.name) != arch}
    if bad:
        raise BenchError(f"{tool.name} facts: architecture missing or wrong for {dict(list(bad.items())[:3])}")


# ---- the run -----------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, workroot: Path) -> None:
        self.args = args
        self.workroot = workroot
        self.logs = workroot / "logs"
        self.reference: dict[str, list[tuple[str, str, str]]] = {}  # host -> tree after converge

    def measure(self, tool: Tool, hosts: Sequence[Host], measure: str, repeat: int, workdir: Path) -> Sample:
        argv = tool.facts_argv() if measure == "facts" else tool.run_argv()
        logdir = self.logs / f"{len(hosts)}" / tool.name / f"{measure}-{repeat}"
        log_sizes = {h.name: _size(h.sshd_log) for h in hosts}
        result = run_measured(argv, cwd=workdir, env=tool.env(), logs=logdir, timeout=RUN_TIMEOUT)
        tool.after_run()
        sessions = max((count_sessions(h.sshd_log, log_sizes[h.name]) for h in hosts), default=None)
        try:
            commands = self.check(tool, hosts, measure, result)
        except BenchError as exc:
            raise BenchError(f"{exc}\n  command: {' '.join(argv)}\n  output: {self.keep_log(logdir)}") from None
        return Sample(
            tool.name, len(hosts), measure, repeat, result.seconds, result.max_rss_kib, result.tree_rss_kib, commands,
            sessions, self.args.rtt_ms,
        )  # fmt: skip

    def check(self, tool: Tool, hosts: Sequence[Host], measure: str, result: Measured) -> int | None:
        if result.exit_code != 0:
            raise BenchError(f"{tool.name} {measure} exited {result.exit_code}")
        text = result.stdout + "\n" + result.stderr
        if measure == "facts":
            check_facts(tool, tool.facts_hosts(text), hosts)
            return None
        commands = check_outcomes(tool, measure, tool.outcomes(text), hosts)
        if measure == "converge":
            for host in hosts:
                tree = tree_digest(Path(host.bench_dir))
                expected = self.reference.setdefault(host.name, tree)
                if tree != expected:
                    diff = sorted(set(tree) ^ set(expected))[:4]
                    raise BenchError(f"{tool.name} left different files on {host.name} than the first tool: {diff}")
        return commands

    def keep_log(self, logdir: Path) -> Path:
        """Copy a failed run's output where it survives the clean-up."""
        kept = Path(self.args.json_dir) / "failed" / logdir.relative_to(self.logs)
        shutil.copytree(logdir, kept, dirs_exist_ok=True)
        return kept


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def count_sessions(log: str, start: int) -> int | None:
    """`Starting session:` lines sshd wrote to the host's log since byte `start` (sshd logs
    asynchronously to the client's exit by a few ms: wait for the count to settle)."""
    if not log:
        return None
    count, last = 0, -1
    for _ in range(20):
        with open(log, "rb") as fh:
            fh.seek(start)
            count = fh.read().count(SESSION_LINE)
        if count == last:
            break
        last = count
        time.sleep(0.05)
    return count


def clean(hosts: Sequence[Host]) -> None:
    for host in hosts:
        shutil.rmtree(host.bench_dir, ignore_errors=True)


def run_size(bench: Bench, tools: list[Tool], hosts: Sequence[Host], fleet: Fleet, results: Results) -> None:
    n = len(hosts)
    sub = Fleet(tuple(hosts), fleet.key, fleet.known_hosts)
    spent: dict[str, float] = {t.name: 0.0 for t in tools}
    for tool in tools:
        tool.prepare(bench.workroot / "work" / str(n) / tool.name, sub, forks=n)
    for repeat in range(bench.args.repeat):
        # Tools take turns within a repeat, so slow drift of a shared machine hits all of them.
        for tool in tools:
            if repeat and spent[tool.name] > bench.args.budget:
                continue  # this tool has had its time at this size; the table shows its n
            workdir = bench.workroot / "work" / str(n) / tool.name
            clean(hosts)
            for measure in (m for m in MEASURES if m in tool.measures):
                tool.before(measure)
                sample = bench.measure(tool, hosts, measure, repeat, workdir)
                results.samples.append(sample)
                spent[tool.name] += sample.seconds
                print(f"  {n:>3} hosts  {tool.name:<8} {measure:<9} #{repeat + 1}  {sample.seconds:7.2f} s", flush=True)
    clean(hosts)


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem:.0f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def versions(tools: list[Tool]) -> dict[str, str]:
    out = {t.name: t.version() for t in tools}
    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True)
    out["openssh"] = (ssh.stderr or ssh.stdout).strip()
    import paramiko

    out["paramiko (fleet)"] = paramiko.__version__
    return out


def start_wan(
    hosts: tuple[Host, ...], fleet_hosts: object, rtt_ms: float, workroot: Path
) -> tuple[subprocess.Popen[bytes], tuple[Host, ...], Path]:
    """One proxy process in front of every host (same address, another port), and a known_hosts
    that names the hosts by their proxy endpoints."""
    sshfleet = sys.modules["sshfleet"]
    proxied, pairs, lines = [], [], []
    for host, real in zip(hosts, fleet_hosts.hosts, strict=True):  # type: ignore[attr-defined]
        port = sshfleet.free_port(host.address)  # type: ignore[attr-defined]
        pairs.append(f"{host.address}:{port}={host.address}:{host.port}")
        kind, key = real.host_public_key
        lines.append(f"[{host.address}]:{port} {kind} {key}\n")
        proxied.append(Host(host.name, host.address, port, host.user, host.bench_dir, host.sshd_log))
    known_hosts = workroot / "known_hosts.wan"
    known_hosts.write_text("".join(lines))
    argv = [sys.executable, str(HERE / "wanproxy.py"), "--rtt-ms", f"{rtt_ms:g}", *pairs]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        proc.kill()
        raise BenchError("the WAN proxy did not start")
    return proc, tuple(proxied), known_hosts


def startup(tools: list[Tool]) -> str:
    """How long the interpreter alone and fleet's `run` imports take here (median of 5), for this
    checkout's fleet and, with --baseline, the baseline's, measured in turn."""
    fleets = [t for t in tools if isinstance(t, FleetTool)]
    if not fleets:
        return "start-up not measured (fleet not among the tools)"
    imports = "import fleet.cli, fleet.playbook, fleet.runner, fleet.executor, fleet.report, fleet.connection"

    def seconds(code: str, tool: Tool) -> float:
        started = time.perf_counter()
        # cwd: `python -c` puts the current folder first on sys.path, before PYTHONPATH
        subprocess.run([sys.executable, "-c", code], check=True, env=tool.env(), cwd=getattr(tool, "repo", None))
        return time.perf_counter() - started

    bare: list[float] = []
    loaded: dict[str, list[float]] = {t.name: [] for t in fleets}
    for _ in range(5):
        bare.append(seconds("pass", fleets[0]))
        for tool in fleets:
            loaded[tool.name].append(seconds(imports, tool))
    base = sorted(bare)[2]
    own = {name: sorted(times)[2] for name, times in loaded.items()}
    text = f"start-up: `python -c pass` {base:.3f} s"
    for name, value in own.items():
        who = "fleet's own start" if name == "fleet" else f"{name}'s own start"
        text += (
            f"; with the modules `fleet run` imports before it connects ({name}) {value:.3f} s "
            f"({who}: {value - base:.3f} s)"
        )
    return text + ", medians of 5."


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", default="1,10,50", help="fleet sizes, comma separated (default 1,10,50)")
    p.add_argument("--repeat", type=int, default=5, help="runs per tool, size and measure (default 5)")
    usual = ",".join(t for t in TOOLS if t != "fleet-base")  # fleet-base comes with --baseline
    p.add_argument("--tools", default=usual, help=f"comma list of {', '.join(TOOLS)}")
    p.add_argument(
        "--budget",
        type=float,
        default=600.0,
        help="seconds per tool and size after which a tool stops repeating (default 600; its n is shown)",
    )
    p.add_argument("--bin", action="append", default=[], help="folder with ansible/pyinfra CLIs (repeatable)")
    p.add_argument(
        "--others-up-to",
        type=int,
        default=50,
        help="sizes above this run fleet alone (default 50: the 200-host run is fleet's)",
    )
    p.add_argument(
        "--rtt-ms",
        type=float,
        default=0.0,
        help="reach every host through a user-space proxy that adds this round-trip time (WAN mode)",
    )
    p.add_argument(
        "--baseline",
        metavar="DIR",
        help="another fleet checkout (e.g. main before a change), benched as tool fleet-base in turn with this one",
    )
    p.add_argument("--out", default=str(HERE / "RESULTS.md"), help="markdown table to write")
    p.add_argument("--json-dir", default=str(HERE / "results"), help="folder for the raw JSON samples")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sorted({int(s) for s in args.hosts.split(",") if s.strip()})
    names = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in names if t not in TOOLS]
    if unknown or not sizes or min(sizes) < 1 or max(sizes) > 240 or args.repeat < 1 or not 0 <= args.rtt_ms <= 1000:
        print(f"bench: error: bad --tools/--hosts/--repeat ({unknown or args.hosts})", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("bench: error: the simulated hosts need root (they are login users with their own sshd)", file=sys.stderr)
        return 1
    if args.baseline:
        BaselineFleetTool.repo = Path(args.baseline).resolve()
        if "fleet-base" not in names:
            names.insert(1, "fleet-base")
    bins = [Path(b) for b in args.bin] + [HERE / ".venv" / "bin"]
    tools = [TOOLS[name](bins) for name in names]
    for tool in tools:
        if reason := tool.missing():
            print(f"bench: error: {tool.name}: {reason}", file=sys.stderr)
            return 1
        tool.setup()
    results = Results(
        command="python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        machine=machine_info(),
        versions=versions(tools),
        settings={
            "forks": "the fleet size, for every tool",
            "budget_s": str(args.budget),
            "rtt_ms": f"{args.rtt_ms:g}",
            "others_up_to": str(args.others_up_to),
        },
    )
    results.notes.append(startup(tools))
    sshfleet = load_sshfleet()
    workroot = Path(tempfile.mkdtemp(prefix="fleet-bench-", dir="/tmp"))
    fleet_hosts = sshfleet.SSHFleet(workroot, max(sizes), prefix="bench", log_level="VERBOSE")  # type: ignore[attr-defined]
    proxy = None
    try:
        fleet_hosts.start()
        hosts = tuple(
            Host(h.name, h.address, h.port, h.user, str(h.home / "bench"), str(h.dir / "sshd.log"))
            for h in fleet_hosts.hosts
        )
        known_hosts = fleet_hosts.known_hosts
        if args.rtt_ms:
            proxy, hosts, known_hosts = start_wan(hosts, fleet_hosts, args.rtt_ms, workroot)
        fleet = Fleet(hosts, fleet_hosts.client_key, known_hosts)
        bench = Bench(args, workroot)
        wan = f", {args.rtt_ms:g} ms RTT through a proxy" if args.rtt_ms else ""
        print(f"bench: {max(sizes)} sshd hosts on {fleet_hosts.subnet}.x{wan}; tools: {', '.join(names)}", flush=True)
        for n in sizes:
            at_size = [t for t in tools if n <= args.others_up_to or t.name == "fleet"]
            run_size(bench, at_size, hosts[:n], fleet, results)
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 2
    finally:
        if proxy is not None:
            proxy.terminate()
            try:
                proxy.wait(10)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait()
        fleet_hosts.stop()
        fleet_hosts.remove_users()
        shutil.rmtree(workroot, ignore_errors=True)
    json_dir = Path(args.json_dir)
    json_dir.mkdir(parents=True, exist_ok=True)
    raw = json_dir / f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{socket.gethostname()}.json"
    raw.write_text(json.dumps(asdict(results), indent=1))
    write_results(Path(args.out), results, raw)
    print(f"bench: wrote {args.out} and {raw}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
