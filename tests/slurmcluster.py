"""A real one-node Slurm cluster on this machine for the tests: munged, slurmctld and slurmd from
Debian's packages (.ci/run installs them), each with this run's own config, key, socket, ports,
state and spool folders, so it touches no system-wide Slurm. Started and stopped by PID."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from sshfleet import free_port

NODE = "fleetnode"
DAEMONS = ("munged", "slurmctld", "slurmd")

SLURM_CONF = """\
ClusterName=fleettest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=3600
KillWait=5
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def missing() -> list[str]:
    return [tool for tool in (*DAEMONS, "sbatch", "squeue", "scontrol", "scancel") if not shutil.which(tool)]


class SlurmCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> SlurmCluster:
        root = self.root
        (root / "state").mkdir(parents=True)
        (root / "spool").mkdir()
        key = root / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        self.conf.write_text(SLURM_CONF.format(
            root=root, node=NODE, cpus=os.cpu_count() or 1,
            ctld_port=free_port("127.0.0.1"), slurmd_port=free_port("127.0.0.1"),
        ))  # fmt: skip
        self._daemon(
            "munged", "--force", f"--socket={root}/munge.sock", f"--key-file={key}",
            f"--log-file={root}/munged.log", f"--pid-file={root}/munged.pid", f"--seed-file={root}/munged.seed",
        )  # fmt: skip
        self._daemon("slurmctld", "-i")
        self._daemon("slurmd", "-N", NODE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = self.run("sinfo", "-h", "-n", NODE, "-o", "%t").stdout.strip()
            if state == "idle":
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the Slurm node never became idle (last: {state!r}); see {root}/slurmctld.log")

    def _daemon(self, *argv: str) -> None:
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} did not start: {done.stderr.strip() or done.stdout.strip()}")

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=60)

    def stop(self) -> None:
        """SIGTERM each daemon by the PID in its pid file; wait (bounded) until it is gone."""
        for name in reversed(DAEMONS):
            pid_file = self.root / f"{name}.pid"
            if not pid_file.exists():
                continue
            pid = int(pid_file.read_text().split()[0])
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
