"""The three tools under test, each as: where its CLI is, how to write its inventory and settings
for the benchmark's hosts, the command lines of a run and of facts gathering, and how to read
from its output what happened on every host (so a run that failed is never timed as a success)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

WORKLOAD = Path(__file__).resolve().parent / "workload"
REPO = WORKLOAD.parent.parent
APP_PORT = 8080


class BenchError(Exception):
    """A tool is missing, failed, or did something other than the workload asks: fail loudly."""


@dataclass(frozen=True)
class HostOutcome:
    changed: int
    failed: int
    unreachable: bool
    commands: int | None = None  # remote commands the tool ran on the host, where it says


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int
    user: str
    bench_dir: str
    sshd_log: str = ""  # the host's sshd log (LogLevel VERBOSE: one `Starting session:` per session)


@dataclass(frozen=True)
class Fleet:
    """What every tool needs to know of the simulated fleet."""

    hosts: tuple[Host, ...]
    key: Path
    known_hosts: Path


def find_bin(name: str, extra_dirs: Sequence[Path]) -> str | None:
    for folder in extra_dirs:
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def _version_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
    except OSError as exc:
        return f"unknown ({exc})"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


class Tool:
    name: ClassVar[str]
    measures: ClassVar[tuple[str, ...]] = ("converge", "rerun", "facts")
    # The work each tool does on a first run of the workload: every task but the apt check.
    converge_changes: ClassVar[int] = 11
    # Remote commands per host on a re-run, where the tool counts them (fleet: one batch of facts
    # and the 12 probes).
    rerun_commands: ClassVar[int | None] = None
    how: ClassVar[str] = ""  # one line for RESULTS.md: how the tool was set up

    def __init__(self, bins: Sequence[Path]) -> None:
        self.bins = list(bins)
        self.workdir = Path()

    def missing(self) -> str | None:
        """Why this tool cannot run here, or None."""
        return None

    def version(self) -> str:
        raise NotImplementedError

    def setup(self) -> None:
        """Once before any timed run."""

    def prepare(self, workdir: Path, fleet: Fleet, forks: int) -> None:
        raise NotImplementedError

    def run_argv(self) -> list[str]:
        raise NotImplementedError

    def facts_argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def outcomes(self, stdout: str) -> dict[str, HostOutcome]:
        raise NotImplementedError

    def facts_hosts(self, stdout: str) -> dict[str, str]:
        """host -> architecture, as each tool's facts output reports it."""
        raise NotImplementedError

    def after_run(self) -> None:
        """Tidy what a run left behind (outside the timed part)."""

    def before(self, measure: str) -> None:
        """Untimed work right before a timed run of `measure`."""


# ---- fleet -------------------------------------------------------------------------------------
class FleetTool(Tool):
    name = "fleet"
    rerun_commands = 1
    how = (
        "`python -m fleet.cli run workload/fleet.yaml` and `... facts` (plain output, as in a CI log) from "
        "this checkout, by the interpreter running the harness; paramiko, one transport per host, strict "
        "host keys against the fleet's known_hosts; `-f` = fleet size."
    )

    repo: ClassVar[Path] = REPO  # whose fleet runs

    def _argv0(self) -> list[str]:
        return [sys.executable, "-m", "fleet.cli"]

    def env(self) -> dict[str, str]:
        # This checkout's fleet (as the tests use it), not whatever copy is installed.
        path = os.pathsep.join(p for p in (str(self.repo), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "PYTHONPATH": path}

    def version(self) -> str:
        out = subprocess.run(
            [sys.executable, "-c", "import fleet; print(fleet.__version__)"],
            capture_output=True,
            text=True,
            env=self.env(),
        ).stdout.strip()
        return f"fleet {out or 'unknown'}"

    def setup(self) -> None:
        """Compile fleet's bytecode, as installing a wheel does (and as the other tools' installs
        did). An editable install under PYTHONDONTWRITEBYTECODE=1 would otherwise compile every
        module on every run and time the compiler, not fleet."""
        code = "import compileall, pathlib, fleet; compileall.compile_dir(pathlib.Path(fleet.__file__).parent, quiet=1)"
        subprocess.run([sys.executable, "-c", code], check=True, env=self.env())

    def prepare(self, workdir: Path, fleet: Fleet, forks: int) -> None:
        self.workdir, self.forks = workdir, forks
        hosts = {
            h.name: {"address": h.address, "port": h.port, "user": h.user, "bench_dir": h.bench_dir}
            for h in fleet.hosts
        }
        data = {
            "all": {
                "vars": {
                    "key": str(fleet.key),
                    "known_hosts": str(fleet.known_hosts),
                    "ssh_config": "",
                    "app_port": APP_PORT,
                },
                "children": {"nodes": {"hosts": hosts}},
            }
        }
        (workdir / "inventory").mkdir(parents=True, exist_ok=True)
        (workdir / "inventory" / "hosts.yaml").write_text(yaml.safe_dump(data, sort_keys=False))

    def run_argv(self) -> list[str]:
        return [*self._argv0(), "run", str(WORKLOAD / "fleet.yaml"), "-i", "inventory", "--forks", str(self.forks)]

    def facts_argv(self) -> list[str]:
        return [*self._argv0(), "facts", "-i", "inventory", "--forks", str(self.forks)]

    def outcomes(self, stdout: str) -> dict[str, HostOutcome]:
        rows = _table_after_header(stdout, ("host", "ok", "changed", "failed", "skipped", "unreachable", "commands"))
        return {
            r[0]: HostOutcome(changed=int(r[2]), failed=int(r[3]), unreachable=r[5] != "no", commands=int(r[6]))
            for r in rows
        }

    def facts_hosts(self, stdout: str) -> dict[str, str]:
        rows = _table_after_header(stdout, ("host", "arch", "os"))
        return {r[0]: r[1] for r in rows}


def _table_after_header(text: str, header: tuple[str, ...]) -> list[list[str]]:
    """The whitespace-split rows of the first table whose header starts with these words."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if tuple(line.split()[: len(header)]) == header:
            rows = []
            for row in lines[i + 1 :]:
                if len(row.split()) < len(header):  # a blank line, or what follows (e.g. fleet's `log: <dir>`)
                    break
                rows.append(row.split())
            return rows
    raise BenchError(f"no table with columns {' '.join(header)} in the output")


# ---- Ansible -----------------------------------------------------------------------------------
ANSIBLE_CFG = """\
[defaults]
forks = {forks}
host_key_checking = True
interpreter_python = /usr/bin/python3
retry_files_enabled = False
gathering = implicit
stdout_callback = default
local_tmp = {workdir}/local-tmp

[ssh_connection]
# Ansible's default ssh_args (ControlMaster/ControlPersist) plus the fleet's known_hosts, checked strictly.
ssh_args = -C -o ControlMaster=auto -o ControlPersist=60s {host_keys}
pipelining = {pipelining}
"""


class AnsibleTool(Tool):
    name = "ansible"
    pipelining = True
    how = (
        "`ansible-playbook workload/ansible.yaml` and `ansible all -m setup` (its full default facts); "
        "OpenSSH connection plugin with Ansible's default ssh_args (ControlMaster=auto, ControlPersist=60s) "
        "and a fresh ControlPath folder per run (no warm master from an earlier run), **pipelining on** (not "
        "the default; the usual speed setting), StrictHostKeyChecking=yes against the fleet's known_hosts, "
        "`forks` = fleet size, default linear strategy, facts gathered by the play (the template uses one)."
    )

    def missing(self) -> str | None:
        if not find_bin("ansible-playbook", self.bins):
            return "ansible-playbook not found (pip install -r bench/requirements.txt)"
        return None

    def version(self) -> str:
        return _version_line([find_bin("ansible", self.bins) or "ansible", "--version"])

    def prepare(self, workdir: Path, fleet: Fleet, forks: int) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        lines = ["[nodes]"]
        for h in fleet.hosts:
            lines.append(
                f"{h.name} ansible_host={h.address} ansible_port={h.port} ansible_user={h.user} bench_dir={h.bench_dir}"
            )
        lines += ["", "[all:vars]", f"ansible_ssh_private_key_file={fleet.key}", f"app_port={APP_PORT}", ""]
        (workdir / "hosts.ini").write_text("\n".join(lines))
        (workdir / "ansible.cfg").write_text(
            ANSIBLE_CFG.format(
                forks=forks,
                host_keys=f"-o UserKnownHostsFile={fleet.known_hosts} -o StrictHostKeyChecking=yes",
                workdir=workdir,
                pipelining=self.pipelining,
            )
        )
        self.control_dir = workdir / "cp"

    def env(self) -> dict[str, str]:
        self.control_dir.mkdir(exist_ok=True)
        return {
            **os.environ,
            "ANSIBLE_CONFIG": str(self.workdir / "ansible.cfg"),
            "ANSIBLE_HOME": str(self.workdir / "home"),
            # A fresh ControlPath folder per run: no warm master from an earlier run helps it.
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.control_dir),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
        }

    def run_argv(self) -> list[str]:
        playbook = find_bin("ansible-playbook", self.bins) or "ansible-playbook"
        return [playbook, "-i", "hosts.ini", str(WORKLOAD / "ansible.yaml")]

    def facts_argv(self) -> list[str]:
        return [find_bin("ansible", self.bins) or "ansible", "all", "-i", "hosts.ini", "-m", "ansible.builtin.setup"]

    _RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

    def outcomes(self, stdout: str) -> dict[str, HostOutcome]:
        return {
            m[1]: HostOutcome(changed=int(m[3]), failed=int(m[5]), unreachable=int(m[4]) > 0)
            for m in self._RECAP.finditer(stdout)
        }

    def facts_hosts(self, stdout: str) -> dict[str, str]:
        found = {}
        for m in re.finditer(r"^(\S+) \| SUCCESS => (\{.*?^\})", stdout, re.M | re.S):
            found[m[1]] = json.loads(m[2])["ansible_facts"]["ansible_architecture"]
        return found

    def after_run(self) -> None:
        """Stop the ControlPersist masters this run left, as the next user run would not find them."""
        ssh = shutil.which("ssh") or "ssh"
        for sock in self.control_dir.iterdir() if self.control_dir.exists() else ():
            subprocess.run([ssh, "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True, timeout=30)


# ---- pyinfra -----------------------------------------------------------------------------------
PYINFRA_FACTS = ("server.Hostname", "server.Arch", "server.KernelVersion", "server.LinuxDistribution",
                 "hardware.Cpus", "hardware.Memory")  # fmt: skip


class PyinfraTool(Tool):
    name = "pyinfra"
    how = (
        "`pyinfra -y inventory.py workload/pyinfra_deploy.py` and `pyinfra inventory.py fact` with six facts "
        "(hostname, arch, kernel, distribution, CPUs, memory); its paramiko SSH connector with "
        "`ssh_strict_host_key_checking=yes` against the fleet's known_hosts, `--parallel` = fleet size. It has "
        "no `creates:`, so the two one-time commands are guarded by a File fact, its documented way."
    )

    def missing(self) -> str | None:
        if not find_bin("pyinfra", self.bins):
            return "pyinfra not found (pip install -r bench/requirements.txt)"
        return None

    def version(self) -> str:
        return _version_line([find_bin("pyinfra", self.bins) or "pyinfra", "--version"])

    def prepare(self, workdir: Path, fleet: Fleet, forks: int) -> None:
        self.workdir, self.forks = workdir, forks
        workdir.mkdir(parents=True, exist_ok=True)
        hosts: list[tuple[str, dict[str, Any]]] = [
            (
                h.name,
                {
                    "ssh_hostname": h.address,
                    "ssh_port": h.port,
                    "ssh_user": h.user,
                    "ssh_key": str(fleet.key),
                    "ssh_known_hosts_file": str(fleet.known_hosts),
                    "ssh_strict_host_key_checking": "yes",
                    "ssh_allow_agent": False,
                    "ssh_look_for_keys": False,
                    "bench_dir": h.bench_dir,
                    "app_port": APP_PORT,
                },
            )
            for h in fleet.hosts
        ]
        (workdir / "inventory.py").write_text(f"nodes = {hosts!r}\n")

    def run_argv(self) -> list[str]:
        pyinfra = find_bin("pyinfra", self.bins) or "pyinfra"
        return [pyinfra, "-y", "--parallel", str(self.forks), "inventory.py", str(WORKLOAD / "pyinfra_deploy.py")]

    def facts_argv(self) -> list[str]:
        pyinfra = find_bin("pyinfra", self.bins) or "pyinfra"
        return [pyinfra, "--parallel", str(self.forks), "inventory.py", "fact", *PYINFRA_FACTS]

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYINFRA_PROGRESS": "off", "NO_COLOR": "1", "TERM": "dumb"}

    # pyinfra logs to stderr; the harness hands its parsers stdout and stderr together.
    _STATUS = re.compile(r"^\s+\[(\S+)\] (Success|No changes|Error)", re.M)

    def outcomes(self, stdout: str) -> dict[str, HostOutcome]:
        counts: dict[str, list[int]] = {}
        for host, status in self._STATUS.findall(stdout):
            changed_failed = counts.setdefault(host, [0, 0])
            if status == "Success":
                changed_failed[0] += 1
            elif status == "Error":
                changed_failed[1] += 1
        return {h: HostOutcome(changed=c, failed=f, unreachable=False) for h, (c, f) in counts.items()}

    def facts_hosts(self, stdout: str) -> dict[str, str]:
        match = re.search(r"--> Fact data for: server\.Arch\s*\n(\{.*?^\})", stdout, re.M | re.S)
        return json.loads(match[1]) if match else {}


# ---- the raw paramiko floors --------------------------------------------------------------------
class FloorTool(Tool):
    """bench/floor.py: paramiko alone, `commands` sessions per host (each runs `true`); its facts
    measure is the raw batched gather (one facts script per host)."""

    commands: ClassVar[int]

    def version(self) -> str:
        import paramiko

        return f"paramiko {paramiko.__version__}"

    def prepare(self, workdir: Path, fleet: Fleet, forks: int) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        spec = {
            "key": str(fleet.key),
            "known_hosts": str(fleet.known_hosts),
            "hosts": [{"name": h.name, "address": h.address, "port": h.port, "user": h.user} for h in fleet.hosts],
        }
        (workdir / "hosts.json").write_text(json.dumps(spec))

    def run_argv(self) -> list[str]:
        return [sys.executable, str(Path(__file__).parent / "floor.py"), "hosts.json", "--commands", str(self.commands)]

    def facts_argv(self) -> list[str]:
        return [sys.executable, str(Path(__file__).parent / "floor.py"), "hosts.json", "--facts"]

    _LINE = re.compile(r"^host (\S+) ok commands (\d+) arch (\S+)$", re.M)

    def outcomes(self, stdout: str) -> dict[str, HostOutcome]:
        return {m[1]: HostOutcome(0, 0, False, int(m[2])) for m in self._LINE.finditer(stdout)}

    def facts_hosts(self, stdout: str) -> dict[str, str]:
        return {m[1]: m[3] for m in self._LINE.finditer(stdout)}


class Floor1(FloorTool):
    name = "paramiko-1"
    commands = 1
    rerun_commands = 1
    measures = ("rerun", "facts")
    how = (
        "bench/floor.py: raw paramiko, every host in parallel, strict host keys, fleet's transport settings "
        "(TCP_NODELAY, AES-GCM first) and its exit (no interpreter teardown); re-run: one command (`true`) per "
        "host; facts: one script of the same system facts per host (the raw batched gather)."
    )


class Floor12(FloorTool):
    name = "paramiko-12"
    commands = 12
    rerun_commands = 12
    measures = ("rerun",)
    how = "bench/floor.py as above, 12 commands per host one after another, each its own session (one per task)."


class FloorLook(FloorTool):
    name = "paramiko-look"
    commands = 1
    rerun_commands = 1
    measures = ("rerun",)
    how = (
        "bench/floor.py --requests: raw paramiko sends each host fleet's own first request of a converged "
        "run (facts and the 12 probes, framed as fleet frames them; captured from an untimed `fleet run -vv` "
        "right before): the host work of fleet's re-run without fleet's engine."
    )

    def prepare(self, workdir: Path, fleet: Fleet, forks: int) -> None:
        super().prepare(workdir, fleet, forks)
        self.fleet = FleetTool(self.bins)
        self.fleet.prepare(workdir, fleet, forks)
        self.host_names = [h.name for h in fleet.hosts]

    def before(self, measure: str) -> None:
        """Converge the hosts with fleet, then capture each host's first request of a re-run."""
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))  # this checkout's fleet, as FleetTool runs it
        from fleet.connection import oneshot_request
        from fleet.facts import facts_timeout
        from fleet.factuse import play_groups
        from fleet.playbook import load_playbook

        # the request's time limit, as fleet sets it: the facts' limit when they start programs
        (play,) = load_playbook(WORKLOAD / "fleet.yaml").plays
        limit = facts_timeout(play_groups(play))

        run = [*self.fleet.run_argv(), "-vv"]
        for _ in range(2):
            done = subprocess.run(run, cwd=self.workdir, env=self.fleet.env(), capture_output=True, text=True)
            if done.returncode != 0:
                raise BenchError(f"{self.name}: fleet failed to converge the hosts: {done.stderr[-500:]}")
        requests = {}
        for host in self.host_names:
            lines = re.findall(rf"^  {re.escape(host)} (\$ ?.*|-> .*)$", done.stdout, re.M)
            end = next(i for i, line in enumerate(lines) if line.startswith("->"))
            script = "\n".join(line[2:] for line in lines[:end])
            if "<file content" in script or "more characters)" in script:
                raise BenchError(f"{self.name}: -vv did not show {host}'s request whole")
            command, stdin = oneshot_request(script.encode(), timeout=limit)
            requests[host] = {"command": command, "stdin": stdin.decode()}
        (self.workdir / "requests.json").write_text(json.dumps(requests))

    def run_argv(self) -> list[str]:
        return [*super().run_argv()[:3], "--requests", "requests.json"]


class BaselineFleetTool(FleetTool):
    """fleet from another checkout (`--baseline DIR`, e.g. main before a change), run in turn with
    this checkout's on the same hosts: a before/after in one run."""

    name = "fleet-base"
    repo: ClassVar[Path] = Path("-")  # set from --baseline
    how = "the same as fleet, from the checkout given by `--baseline` (the state before a change)."

    def missing(self) -> str | None:
        if not (self.repo / "fleet" / "cli.py").is_file():
            return f"--baseline {self.repo} is not a fleet checkout"
        return None


TOOLS: dict[str, type[Tool]] = {
    t.name: t for t in (FleetTool, BaselineFleetTool, AnsibleTool, PyinfraTool, Floor1, Floor12, FloorLook)
}
FLOORS = ("paramiko-1", "paramiko-12", "paramiko-look")
