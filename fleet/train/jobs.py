"""One training job on one host, as pure functions: the shell scripts that launch, observe and stop
it, and the parsers that read their output. No I/O here; control.py runs these over connections.

A job lives in `<workdir>/runs/<run>/` on its host:
    job.sh       the wrapper: writes job.pid, runs the command, writes job.exit
    job.pid      process-group id (the wrapper is a session leader, so pgid = sid = its pid)
    job.tag      FLEET_JOB value in the environment of every process of the job: finds them all,
                 even those that left the process group (torchrun starts workers in new sessions)
    job.json     the launch: run, launch id, node rank, nodes, GPUs, budget, command
    job.started  epoch seconds; job.exit: the exit code; job.stopped: why it was stopped
    training.log the job's stdout and stderr (train_grpo.py logs its steps there)
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import shell
from ..facts import sections

LOG = "training.log"
STEP_RECORD = "(^|[[:space:]])step=[0-9]+"  # train_grpo.py's step line, as grep -E finds it
STOPPED_BY_USER = "stopped by fleet train stop"
PEER_PREFIX = "peer "
_STEP = re.compile(r"(?:^|\s)step=(\d+)(?:/(\d+))?")
_METRIC = re.compile(r"(?:^|\s)(loss|reward)=(\S+)")


@dataclass(frozen=True)
class RunPaths:
    workdir: str
    run: str

    @property
    def dir(self) -> str:
        return f"{self.workdir.rstrip('/')}/runs/{self.run}"

    def file(self, name: str) -> str:
        return f"{self.dir}/{name}"

    def q(self, name: str) -> str:
        """A file of the run, quoted for sh (a leading ~/ still means the remote home)."""
        return shell.path(self.file(name))


@dataclass(frozen=True)
class NodeSpec:
    """Everything needed to launch one node of a run: decided before any host is touched."""

    host: str
    paths: RunPaths
    argv: tuple[str, ...]
    env: Mapping[str, str]
    tag: str
    meta: Mapping[str, Any]


# ---- scripts ---------------------------------------------------------------------------------
# Both backends (this file's detached jobs and slurm.py's batch script) build the job's
# environment and command line here.
def python_word(python: str) -> str:
    """The job's python for sh: a path keeps its leading ~/, a bare name is looked up in PATH."""
    return shell.path(python) if "/" in python else shell.quote(python)


def exports(env: Mapping[str, str]) -> str:
    return "".join(f"export {name}={shell.quote(value)}\n" for name, value in env.items())


def command_line(argv: Sequence[str]) -> str:
    return " ".join(python_word(a) if i == 0 else shell.quote(a) for i, a in enumerate(argv))


def job_env(job: Any, budget_mib: int, **more: str) -> dict[str, str]:
    """What every process of a job finds in its environment, on either backend."""
    return {
        **job.env,
        "FLEET_RUN": job.run_name,
        "FLEET_GPU_BUDGET_MIB": str(budget_mib),
        "PYTHONUNBUFFERED": "1",  # step lines reach the log as they happen
        **more,
    }


def section_fn() -> str:
    return "s() { printf '\\n@@%s\\n' \"$1\"; }\n"


def log_sections(paths: RunPaths, tail: int) -> str:
    """Sections `train_step` (the last step record) and `train_tail` (the log's last lines)."""
    return (
        "s train_step\n"
        f"grep -a -E '{STEP_RECORD}' {paths.q(LOG)} 2>/dev/null | tail -n 1 | cut -c1-500\n"
        "s train_tail\n"
        f"tail -n {int(tail)} {paths.q(LOG)} 2>/dev/null | cut -c1-300\n"
    )


def checkpoint_section(paths: RunPaths, name: str = "train_checkpoints") -> str:
    """The run's whole checkpoints: a checkpoint-N the Trainer wrote its trainer_state.json into
    (it writes that last; a job stopped while saving leaves one without it, which cannot resume)."""
    return (
        f"s {name}\nfor d in {shell.path(paths.dir)}/checkpoint-*; do "
        '[ -f "$d/trainer_state.json" ] && printf \'%s\\n\' "${d##*/}"; done\n'
    )


def parse_checkpoints(text: str) -> tuple[str, ...]:
    """checkpoint-N directory names, oldest first."""
    numbered = [c for c in text.split() if re.fullmatch(r"checkpoint-\d+", c)]
    return tuple(sorted(numbered, key=lambda c: int(c.rpartition("-")[2])))


def attention_check(workdir: str, python: str, script: bytes, config: bytes, env: Mapping[str, str]) -> str:
    """A command printing the line `attention: <impl> (<why>)` that train_grpo.py (this
    copy, `--which-attention`) prints for the configured model on the host, with the job's
    environment; nothing is loaded. The one rule is the script's own; fleet only asks it."""
    py = python_word(python)
    source = base64.b64encode(script).decode()
    conf = base64.b64encode(config).decode()
    return (
        f"( cd {shell.path(workdir)} 2>/dev/null || cd; {exports(env).replace(chr(10), '; ')}"
        f"if command -v {py} >/dev/null 2>&1 || [ -x {py} ]; then "
        f'printf %s {conf} | base64 -d | {py} -c "$(printf %s {source} | base64 -d)" --which-attention '
        "--config /dev/stdin 2>&1 | grep -a '^attention: ' | tail -n 1 | cut -c1-400; "
        "else echo 'attention: unknown (no training python here)'; fi )\n"
    )


def outcome_lines(paths: RunPaths) -> str:
    """`exit <code> <mtime>`, `stopped <mtime> <why>`, `meta <job.json>`: the files a job leaves
    on either backend (the wrapper or the batch script writes job.exit; a stop writes job.stopped)."""
    q = paths.q
    return (
        f'[ -f {q("job.exit")} ] && echo "exit $(cat {q("job.exit")}) $(stat -c %Y {q("job.exit")})"\n'
        f'[ -f {q("job.stopped")} ] && echo "stopped $(stat -c %Y {q("job.stopped")}) '
        f"$(head -c 300 {q('job.stopped')} | tr '\\n' ' ')\"\n"
        f"[ -f {q('job.json')} ] && echo \"meta $(tr -d '\\n' < {q('job.json')})\"\n"
    )


def _procs_fn(paths: RunPaths) -> str:
    # Every live process whose environment carries this job's tag (zombies have none).
    return (
        f"tag=$(cat {paths.q('job.tag')} 2>/dev/null)\n"
        'procs() { [ -n "$tag" ] && grep -l -a -z -x -F -e "FLEET_JOB=$tag" /proc/[0-9]*/environ 2>/dev/null '
        "| cut -d/ -f3 | tr '\\n' ' '; }\n"
    )


def state_probe(paths: RunPaths) -> str:
    """Sections `train_*`: pid/exit/stop files, live tagged processes, last step line, log tail, GPUs."""
    q = paths.q
    return (
        section_fn() + _procs_fn(paths) + "s train_state\n"
        'echo "now $(date +%s)"\n'
        f'[ -f {q("job.pid")} ] && echo "pid $(cat {q("job.pid")})"\n'
        f'[ -f {q("job.started")} ] && echo "started $(cat {q("job.started")})"\n'
        + outcome_lines(paths)
        + 'echo "procs $(procs)"\n'
        + log_sections(paths, 5)
        + "s train_gpus\n"
        "command -v nvidia-smi >/dev/null 2>&1 && "
        "nvidia-smi --query-gpu=index,uuid,memory.used,memory.total --format=csv,noheader,nounits 2>/dev/null\n"
        "s train_apps\n"
        "command -v nvidia-smi >/dev/null 2>&1 && "
        "nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits 2>/dev/null\n"
        "s train_end\n"
    )


def preflight_probe(paths: RunPaths, files: Sequence[str]) -> str:
    """What a launch looks at (the engine sends it with the host's facts): the job's state, the
    synced files' sha256 and the run's checkpoints."""
    lines = [state_probe(paths), "s train_files"]
    for name in files:
        target = shell.path(f"{paths.workdir.rstrip('/')}/{name}")
        lines.append(f"( sha256sum {target} 2>/dev/null || echo 'absent  x' ) | cut -d' ' -f1")
    lines.append(checkpoint_section(paths).rstrip("\n"))
    lines.append("s train_end")
    return "\n".join(lines) + "\n"


def imports_probe(paths: RunPaths, python: str, modules: Sequence[str]) -> str:
    """Whether the job's python is there and which of the modules it cannot import. A probe of its
    own: it costs seconds (torch), and a launch that must look again under the host lock looks
    again at the job, not at the python, which no run changes."""
    # A real import, not find_spec: a module that is there but breaks on import (an ABI mismatch,
    # a missing shared library) must stop the launch here, not 15 s into the job.
    code = (
        "import importlib\n"
        f"for name in {list(modules)!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except BaseException as exc:\n"
        "        why = (str(exc).strip().splitlines() or [''])[0][:200]\n"
        "        print('cannot-import', name, type(exc).__name__ + (': ' + why if why else ''))\n"
        "print('imports-done')\n"
    )  # the module names are repr()'d into Python source, then the whole program shell-quoted
    py = python_word(python)
    return (
        f"cd {shell.path(paths.workdir)} 2>/dev/null || cd; "
        f"if command -v {py} >/dev/null 2>&1 || [ -x {py} ]; then "
        f"echo ok; {py} -c {shell.quote(code)} 2>&1 | grep -a -E '^(cannot-import|imports-done)' | cut -c1-300; "
        "else echo missing; fi\n"
    )


def wrapper_script(spec: NodeSpec) -> str:
    """job.sh: the job itself, recording its pid first and its exit code last."""
    p = spec.paths
    command = command_line(spec.argv)
    return (
        f"# fleet train: {spec.meta.get('run')} on {spec.host} (launch {spec.meta.get('launch_id')})\n"
        f"echo $$ > {p.q('job.pid')}\n"
        f"date +%s > {p.q('job.started')}\n"
        f"cd {shell.path(p.workdir)} || {{ echo 127 > {p.q('job.exit')}; exit 127; }}\n"
        f"{exports(spec.env)}"
        f"printf '%s fleet: starting %s\\n' \"$(date '+%Y-%m-%d %H:%M:%S')\" {shell.quote(command)}\n"
        f"{command}\n"
        "rc=$?\n"
        "printf '%s fleet: job exited with code %s\\n' \"$(date '+%Y-%m-%d %H:%M:%S')\" $rc\n"
        f"echo $rc > {p.q('job.exit.tmp')} && mv -f {p.q('job.exit.tmp')} {p.q('job.exit')}\n"
        "exit $rc\n"
    )


def launch_script(
    spec: NodeSpec, synced: Mapping[str, bytes], *, mode: str = "new", wait: int = 0, attention: str = ""
) -> str:
    """Write the changed files and the wrapper, then start the wrapper in a session of its own
    (setsid), its output appended to the log and stdin closed, so it outlives the SSH session.

    mode: `new` (the run directory holds no run), `resume` (the log goes on; the job's argv
    already carries --resume), `force` (the old run directory, checkpoints included, is removed).
    Then it watches the job for up to `wait` seconds: until its first step record, its exit, or
    the time is up, and says which (`parse_launch`), with the log's last lines when it exited.
    `attention` (an `attention_check` command) runs beside the watch, its line in the output."""
    p = spec.paths
    parts = []
    if mode == "force":
        parts.append(f"rm -rf -- {shell.path(p.dir)}\n")
    parts.append(f"mkdir -p {shell.path(p.dir)} || exit 1\n")
    for name, content in synced.items():
        parts.append(shell.write_file(f"{p.workdir.rstrip('/')}/{name}", content))
    # 0700: the job's environment (a token in the config's env, say) is for its owner's eyes only
    parts.append(shell.write_file(p.file("job.sh"), wrapper_script(spec).encode(), 0o700))
    parts.append(shell.write_file(p.file("job.json"), json.dumps(dict(spec.meta), sort_keys=True).encode()))
    parts.append(shell.write_file(p.file("job.tag"), spec.tag.encode()))
    parts.append(
        f"off=$(stat -c %s {p.q(LOG)} 2>/dev/null || echo 0)\n"
        f"rm -f {p.q('job.pid')} {p.q('job.exit')} {p.q('job.stopped')} {p.q('job.started')}\n"
        f"FLEET_JOB={shell.quote(spec.tag)} setsid sh {p.q('job.sh')} >>{p.q(LOG)} 2>&1 </dev/null &\n"
        "i=0\n"
        f"while [ ! -s {p.q('job.pid')} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n"
        f'if [ -s {p.q("job.pid")} ]; then echo "pid $(cat {p.q("job.pid")})"; '
        f'else echo "the job did not start within 10s; see {p.file(LOG)}" >&2; exit 1; fi\n'
        # only this launch's lines count: a resumed run's log already holds step records
        f"new() {{ tail -c +$((off + 1)) {p.q(LOG)} 2>/dev/null; }}\n"
        # the attention question imports torch: asked while the job starts, not before
        + (f"{attention.rstrip()} >{p.q('attention.txt')} 2>/dev/null &\napid=$!\n" if attention else "")
        + "i=0\n"
        f"while [ $i -lt {int(wait) * 10} ]; do\n"
        f"  if [ -f {p.q('job.exit')} ] || new | grep -q -a -E '{STEP_RECORD}'; then break; fi\n"
        "  sleep 0.1; i=$((i+1))\n"
        "done\n"
        'echo "waited $((i / 10))"\n'
        f'if [ -f {p.q("job.exit")} ]; then echo "exit $(cat {p.q("job.exit")})"; '
        f"elif new | grep -q -a -E '{STEP_RECORD}'; then echo ready; fi\n"
        + (f"wait $apid; cat {p.q('attention.txt')}; rm -f {p.q('attention.txt')}\n" if attention else "")
        + "echo @@tail\n"
        "new | tail -n 60 | cut -c1-300\n"
    )
    return "".join(parts)


@dataclass(frozen=True)
class LaunchOutcome:
    """What a launch saw in its watch window."""

    pid: int | None
    waited: int  # seconds
    exit_code: int | None  # the job ended within the window
    ready: bool  # its first step record came
    tail: tuple[str, ...]  # the log's last lines from this launch
    attention: str | None = None  # `eager (gpt_oss attention sinks ...)`: what train_grpo.py said it will use

    def last_words(self, lines: int = 10) -> list[str]:
        """The lines that say why: the last error lines (a launcher's summary may bury them), then
        the log's last lines."""
        errors = [line for line in self.tail if _ERROR_LINE.search(line) and not _LAUNCHER.search(line)][-3:]
        last = [line for line in self.tail[-lines:] if line not in errors]
        return [*errors, *(["..."] if errors and last else []), *last]


_ERROR_LINE = re.compile(r"\b\w*(Error|Exception)\b:|^\s*error:", re.I)
# torchrun's own report of a failed worker: it names the failure, the worker's lines say why
_LAUNCHER = re.compile(r"torch\.distributed|ChildFailedError|elastic")


def parse_launch(text: str) -> LaunchOutcome:
    head, _, tail = text.partition("@@tail\n")
    values: dict[str, str] = {}
    for line in head.splitlines():
        key, _, rest = line.partition(" ")
        values[key] = rest.strip()
    code = values.get("exit", "")
    return LaunchOutcome(
        attention=values.get("attention:") or None,
        pid=int(values["pid"]) if values.get("pid", "").isdigit() else None,
        waited=int(values["waited"]) if values.get("waited", "").isdigit() else 0,
        exit_code=int(code) if code.lstrip("-").isdigit() else (-1 if "exit" in values else None),
        ready="ready" in values,
        tail=tuple(line for line in tail.splitlines() if line.strip()),
    )


def stop_script(paths: RunPaths, reason: str, timeout: int) -> str:
    """TERM the process group and every tagged process, wait (bounded), KILL what is left, and
    report what is still alive: the caller confirms the job is gone."""
    q = paths.q
    return (
        _procs_fn(paths) + "p=$(procs)\n"
        'if [ -z "$p" ]; then echo "not-running"; exit 0; fi\n'
        f"printf '%s\\n' {shell.quote(reason)} > {q('job.stopped')}\n"
        f"pg=$(cat {q('job.pid')} 2>/dev/null)\n"
        # Only signal the group when its leader is ours: a pid file alone may name a reused id.
        'case " $p " in *" $pg "*) kill -TERM -"$pg" 2>/dev/null;; esac\n'
        "kill -TERM $p 2>/dev/null\n"
        f'i=0; while [ -n "$(procs)" ] && [ $i -lt {timeout * 10} ]; do sleep 0.1; i=$((i+1)); done\n'
        "k=$(procs)\n"
        'if [ -n "$k" ]; then echo "killed $k"; case " $k " in *" $pg "*) kill -KILL -"$pg" 2>/dev/null;; esac; '
        "kill -KILL $k 2>/dev/null; fi\n"
        'i=0; while [ -n "$(procs)" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done\n'
        'echo "stopped $p"\n'
        'echo "left $(procs)"\n'
    )


def tail_script(paths: RunPaths, lines: int) -> str:
    return f"tail -n {int(lines)} {paths.q(LOG)} 2>/dev/null\n"


def follow_script(paths: RunPaths, offset: int, limit: int = 1 << 20) -> str:
    """The log from byte `offset` on (at most `limit` bytes), after one line
    `<start> <end> <running>`; a log shorter than the offset was rotated: read it from 0."""
    q = paths.q
    return (
        _procs_fn(paths) + f"size=$(stat -c %s {q(LOG)} 2>/dev/null || echo 0); off={int(offset)}\n"
        'if [ "$size" -lt "$off" ]; then off=0; fi\n'
        f"end=$((size < off + {limit} ? size : off + {limit}))\n"
        'if [ -n "$(procs)" ]; then run=1; else run=0; fi\n'
        'echo "$off $end $run"\n'
        f'if [ "$end" -gt "$off" ]; then tail -c +$((off + 1)) {q(LOG)} | head -c $((end - off)); fi\n'
    )


# ---- parsing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    step: int | None = None
    max_steps: int | None = None
    loss: float | None = None
    reward: float | None = None


def parse_progress(line: str) -> Progress:
    """The numbers of a `step=N/M loss=… reward=…` line (train_grpo.py's step record)."""
    step = _STEP.search(line)
    if not step:
        return Progress()
    metrics: dict[str, float] = {}
    for key, value in _METRIC.findall(line):
        try:
            metrics[key] = float(value)
        except ValueError:
            continue
    return Progress(
        step=int(step.group(1)),
        max_steps=int(step.group(2)) if step.group(2) else None,
        loss=metrics.get("loss"),
        reward=metrics.get("reward"),
    )


@dataclass(frozen=True)
class GpuUse:
    peak_mib: int  # the most memory the job holds on any one of its GPUs
    whole_gpu: bool  # True: the job's processes were not visible to nvidia-smi; whole-GPU use shown


def gpu_use(gpus_csv: str, apps_csv: str, procs: frozenset[int], visible: Sequence[int] | None) -> GpuUse | None:
    """The job's GPU memory: its processes' use per GPU (nvidia-smi --query-compute-apps), or
    the used memory of its GPUs when nvidia-smi cannot see its processes (another pid namespace)."""
    gpus = []
    for row in gpus_csv.splitlines():
        cells = [c.strip() for c in row.split(",")]
        if len(cells) == 4 and cells[0].isdigit():
            gpus.append((int(cells[0]), cells[1], _int(cells[2]), _int(cells[3])))
    if not gpus:
        return None
    per_gpu: dict[str, int] = {}
    for row in apps_csv.splitlines():
        cells = [c.strip() for c in row.split(",")]
        if len(cells) == 3 and cells[0].isdigit() and int(cells[0]) in procs:
            per_gpu[cells[1]] = per_gpu.get(cells[1], 0) + _int(cells[2])
    if per_gpu:
        return GpuUse(max(per_gpu.values()), whole_gpu=False)
    if not procs:
        return None
    mine = [g for g in gpus if visible is None or g[0] in visible]
    return GpuUse(max((g[2] for g in mine), default=0), whole_gpu=True) if mine else None


def _int(text: str) -> int:
    match = re.search(r"\d+", text)
    return int(match.group()) if match else 0


@dataclass(frozen=True)
class JobState:
    state: str  # absent | running | finished | failed | stopped | lost
    pid: int | None = None
    exit_code: int | None = None
    procs: frozenset[int] = frozenset()
    started: int | None = None
    ended: int | None = None
    now: int | None = None
    stopped_reason: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    progress: Progress = Progress()
    tail: tuple[str, ...] = ()
    gpu: GpuUse | None = None

    @property
    def runtime(self) -> int | None:
        if self.started is None or self.now is None:
            return None
        end = self.ended if self.state != "running" and self.ended else self.now
        return max(0, end - self.started)

    @property
    def leftovers(self) -> frozenset[int]:
        """Processes of the job still alive although its command ended."""
        return self.procs if self.state != "running" else frozenset()

    @property
    def note(self) -> str:
        if self.leftovers:
            pids = " ".join(map(str, sorted(self.leftovers)))
            return f"{self.state}, but processes {pids} are left (fleet train stop ends them)"
        if self.state == "failed" and self.stopped_reason and self.stopped_reason.startswith(PEER_PREFIX):
            return f"stopped: {self.stopped_reason}"
        if self.state == "failed" and self.exit_code is not None:
            # the job's last words: not the wrapper's line, not a banner of '=' or '-'
            said = [line for line in self.tail if " fleet: " not in line and any(c.isalnum() for c in line)]
            return f"exit code {self.exit_code}" + (f": {said[-1]}" if said else "")
        if self.state == "lost":
            return "no process and no exit code (killed with the wrapper, or the host rebooted)"
        if self.state == "stopped":
            return self.stopped_reason or ""
        return ""


def parse_state(text: str) -> JobState:
    sec = sections(text)
    values: dict[str, str] = {}
    for line in sec.get("train_state", "").splitlines():
        key, _, rest = line.partition(" ")
        values[key] = rest.strip()
    procs = frozenset(int(p) for p in values.get("procs", "").split() if p.isdigit())
    exit_code = ended = None
    if "exit" in values:
        code, _, mtime = values["exit"].partition(" ")
        exit_code = int(code) if code.lstrip("-").isdigit() else -1
        ended = int(mtime) if mtime.isdigit() else None
    stopped_reason = None
    if "stopped" in values:
        mtime, _, stopped_reason = values["stopped"].partition(" ")
        ended = ended or (int(mtime) if mtime.isdigit() else None)
    try:
        meta = json.loads(values["meta"]) if values.get("meta") else {}
    except json.JSONDecodeError:
        meta = {}
    pid = int(values["pid"]) if values.get("pid", "").isdigit() else None
    # The exit file means the job's command ended; tagged processes still alive after it are
    # leftovers (e.g. torchrun workers whose agent was killed), not a running job.
    peer_stop = bool(stopped_reason and stopped_reason.startswith(PEER_PREFIX))
    if procs and exit_code is None:
        state = "running"
    elif peer_stop or (exit_code not in (None, 0) and stopped_reason != STOPPED_BY_USER):
        state = "failed"
    elif stopped_reason:
        state = "stopped"
    elif exit_code is not None:
        state = "finished"
    elif pid is not None:
        state = "lost"
    else:
        state = "absent"
    visible = meta.get("gpus")
    return JobState(
        state=state,
        pid=pid,
        exit_code=exit_code,
        procs=procs,
        started=int(values["started"]) if values.get("started", "").isdigit() else None,
        ended=ended,
        now=int(values["now"]) if values.get("now", "").isdigit() else None,
        stopped_reason=stopped_reason or None,
        meta=meta,
        progress=parse_progress(sec.get("train_step", "")),
        tail=tuple(line for line in sec.get("train_tail", "").splitlines() if line.strip()),
        gpu=gpu_use(sec.get("train_gpus", ""), sec.get("train_apps", ""), procs, visible),
    )


@dataclass(frozen=True)
class Preflight:
    state: JobState
    file_sha: Mapping[str, str | None]  # None: absent on the host
    checkpoints: tuple[str, ...] = ()  # checkpoint-N directories of the run, oldest first

    @property
    def newest_checkpoint(self) -> str | None:
        return self.checkpoints[-1] if self.checkpoints else None


def parse_preflight(text: str, files: Sequence[str]) -> Preflight:
    sec = sections(text)
    shas = sec.get("train_files", "").splitlines()
    file_sha = {
        name: (shas[i].strip() if i < len(shas) and re.fullmatch(r"[0-9a-f]{64}", shas[i].strip()) else None)
        for i, name in enumerate(files)
    }
    return Preflight(parse_state(text), file_sha, parse_checkpoints(sec.get("train_checkpoints", "")))


@dataclass(frozen=True)
class Imports:
    python_found: bool
    missing: tuple[str, ...]  # "name (why)" for each module the job's python cannot import


def parse_imports(text: str) -> Imports:
    lines = text.splitlines()
    found = bool(lines) and lines[0].strip() == "ok"
    missing = []
    for line in lines[1:]:
        words = line.strip().split(" ", 2)
        if words[0] == "cannot-import" and len(words) > 1:
            missing.append(f"{words[1]} ({words[2]})" if len(words) > 2 else words[1])
    if found and not missing and "imports-done" not in lines[1:]:
        missing.append("(the import check itself crashed)")
    return Imports(found, tuple(missing))


@dataclass(frozen=True)
class StopOutcome:
    was_running: bool
    killed: tuple[int, ...]  # survived TERM
    left: tuple[int, ...]  # still alive after KILL: the stop failed


def parse_stop(text: str) -> StopOutcome:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(" ")
        values[key] = rest
    if "not-running" in values:
        return StopOutcome(False, (), ())

    def pids(key: str) -> tuple[int, ...]:
        return tuple(int(p) for p in values.get(key, "").split() if p.isdigit())

    return StopOutcome(True, pids("killed"), pids("left"))
