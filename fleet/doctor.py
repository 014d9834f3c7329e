"""`fleet doctor`: the troubleshooting section (8) of the setup guide as a command.

One batched command per host looks at the host and its venv and finds each known failure:
  no-gpu          nvidia-smi finds no driver/GPU on a host that needs one (require_gpu) -> the driver
  cpu-torch       ImportError: libtorch_cuda.so not found / a CPU-only torch -> reinstall the CUDA build
  cuda-unavailable  a CUDA torch on a GPU host, but torch.cuda.is_available() is False -> driver/CUDA
  stack-broken    `from trl import GRPOTrainer` fails -> reinstall the libraries with the lock
  fa3-missing     flash_attn_3 seems to be not installed -> the FA3 wheel (aarch64), or fall back to FA2/SDPA
  vllm-missing    vllm found no GH200 wheel -> uninstall, reinstall with its extra index (+ pypi.nvidia.com)
  build-prereqs   Could not build wheels for flash-attn -> packaging ninja cmake, --no-build-isolation, MAX_JOBS
and prints the finding and its remedy; a second command adds the GPU health problems (fleet.health).
Some findings are notes, not problems (FA3 missing where the setup recorded a fallback, or on a
host without a GPU): they are shown, never fail the exit code. `--fix` applies the remedies as tasks
(the setup playbook's own, found by tag, after an uninstall where the guide says so; for GPUs only
persistence and compute mode), then looks again; its exit code is what the second look found."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import shell
from .facts import sections
from .inventory import Inventory
from .model import FleetError, RunReport
from .playbook import Play, Playbook, load_playbook
from .runner import Session, each_host
from .task import Task
from .tasks.stack import PY_HELPERS, STACK_FILE
from .tasks.uv import venv_python
from .templating import TemplateError, layered

# Runs in the venv's Python. vLLM is looked up, not imported (an import takes many seconds); the
# trainer is imported, as training will.
DETECT = (
    PY_HELPERS
    + r"""import importlib.util as u, os
names = ("torch", "vllm", "flash_attn_3", "flash_attn", "packaging", "ninja", "cmake", "transformers", "trl")
r = {"versions": {n: version(n) for n in names}}
try:
    import torch
    lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    r["torch"] = {"version": str(torch.__version__), "cuda": torch.version.cuda,
                  "libtorch_cuda": os.path.exists(os.path.join(lib, "libtorch_cuda.so")),
                  "cuda_available": bool(torch.version.cuda) and torch.cuda.is_available()}
except Exception as e:
    r["torch"] = {"error": error(e)}
try:
    from trl import GRPOTrainer
    r["grpo"] = None
except Exception as e:
    r["grpo"] = error(e)
try:
    importlib.import_module("flash_attn_3")
    r["flash_attn_3"] = None
except Exception as e:
    r["flash_attn_3"] = error(e)
r["vllm"] = None if u.find_spec("vllm") else "vllm is not importable"
print(json.dumps(r))
"""
)


def detect_script(venv: str) -> str:
    py = venv_python(venv)
    return (
        f'PATH="$HOME/.local/bin:$PATH"; if [ -x {py} ]; then {py} -c {shell.quote(DETECT)} 2>&1 | tail -n 1; '
        'else echo \'{"venv": "missing"}\'; fi; echo @@arch; uname -m; echo @@tools; '
        "for t in ninja cmake; do command -v $t >/dev/null 2>&1 && echo $t; done; "
        "echo @@gpu; if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L 2>&1 | head -n 4; "
        'else echo "nvidia-smi: not installed"; fi; '
        f"echo @@stack; cat {STACK_FILE} 2>/dev/null; true"
    )


@dataclass(frozen=True)
class Finding:
    id: str
    problem: str
    remedy: str
    packages: tuple[str, ...] = ()  # what the remedy installs, where it depends on the host
    command: tuple[str, ...] = ()  # the remedy as one command run as root (GPU settings)
    note: bool = False  # worth knowing, not a problem: never fails the exit code


@dataclass(frozen=True)
class Diagnosis:
    host: str
    venv: str
    findings: tuple[Finding, ...] = ()
    error: str | None = None


def diagnose(output: str, venv: str, vars: Mapping[str, Any]) -> list[Finding]:
    """Findings from the detect script's output. Pure: recorded output in, findings out."""
    head, _, rest = output.partition("@@arch")
    parts = sections("@@arch" + rest)
    tools = set(parts.get("tools", "").split())
    arch = parts.get("arch", "").strip()
    gpu_lines = [line for line in parts.get("gpu", "").splitlines() if line.strip()]
    has_gpu = any(line.startswith("GPU ") for line in gpu_lines)
    need_gpu = _truthy(vars.get("require_gpu", True))
    found = []
    if need_gpu and not has_gpu and "gpu" in parts:
        said = gpu_lines[0][:200] if gpu_lines else "no output"
        found.append(Finding("no-gpu", f"no NVIDIA GPU answers: {said}",
                             f"install the NVIDIA driver {vars.get('min_driver', '570.148.08')} or newer and check "
                             "the GPU (nvidia-smi); a host without a GPU sets require_gpu: false"))  # fmt: skip
    try:
        seen = json.loads(head.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return [*found, Finding("venv-broken", f"the Python in {venv} did not answer: {head.strip()[-200:]}",
                                f"recreate the venv: rm -rf {venv}, then fleet run playbooks/setup.yaml")]  # fmt: skip
    if seen.get("venv") == "missing":
        return [*found, Finding("venv-missing", f"no venv at {venv}",
                                "create it: fleet run playbooks/setup.yaml --tags venv")]  # fmt: skip
    versions = seen.get("versions", {})
    torch = seen.get("torch", {})
    reinstall = "uv pip uninstall torch torchvision torchaudio; " + torch_install_text(vars)
    if "error" in torch:
        problem = (
            f"ImportError: libtorch_cuda.so not found ({torch['error']})"
            if "libtorch_cuda" in torch["error"]
            else f"torch does not import: {torch['error']}"
        )
        if not versions.get("torch"):
            problem = "torch is not installed"
        found.append(Finding("cpu-torch", problem, f"install the CUDA build of PyTorch (section 2): {reinstall}"))
    elif not torch.get("cuda") or not torch.get("libtorch_cuda"):
        what = "no CUDA" if not torch.get("cuda") else "no lib/libtorch_cuda.so"
        found.append(Finding("cpu-torch", f"torch {torch.get('version')} is a CPU-only build ({what})",
                             f"reinstall the CUDA build of PyTorch (section 2): {reinstall}"))  # fmt: skip
    elif has_gpu and torch.get("cuda_available") is False:
        found.append(Finding("cuda-unavailable",
                             f"torch {torch.get('version')} (CUDA {torch.get('cuda')}) cannot use the GPU: "
                             "torch.cuda.is_available() is False",
                             f"the driver must support CUDA {vars.get('cuda_version', '12.8')} "
                             f"({vars.get('min_driver', '570.148.08')}+); check nvidia-smi, CUDA_VISIBLE_DEVICES "
                             "and that no other driver/runtime shadows it (LD_LIBRARY_PATH)"))  # fmt: skip
    if seen.get("grpo") and versions.get("trl"):
        lock = vars.get("stack_lock") or "the lock"
        found.append(Finding("stack-broken",
                             f"from trl import GRPOTrainer fails ({seen['grpo']}; transformers "
                             f"{versions.get('transformers')}, trl {versions.get('trl')}): this stack cannot train",
                             f"reinstall the libraries with the lock ({lock}): "
                             "fleet run playbooks/setup.yaml --tags vllm,libs,verify"))  # fmt: skip
    if seen.get("flash_attn_3"):
        found.append(_fa3_finding(seen["flash_attn_3"], versions, arch, need_gpu, parts, vars))
    if seen.get("vllm"):
        extra = vars.get("vllm_extra_index", "https://wheels.vllm.ai/0.10.2/")
        fallback = vars.get("vllm_fallback_index", "https://pypi.nvidia.com")
        found.append(Finding("vllm-missing", "vllm is not installed (no GH200 wheel was found)",
                             f"uv pip uninstall vllm; reinstall with --extra-index-url {extra} "
                             f"(and --extra-index-url {fallback} if needed) (section 3)"))  # fmt: skip
    lacking = [n for n in ("packaging", "ninja", "cmake") if not versions.get(n) and n not in tools]
    if lacking:
        jobs = vars.get("max_jobs", 8)
        found.append(Finding("build-prereqs", f"flash-attn builds will fail: {', '.join(lacking)} missing",
                             f"uv pip install {' '.join(lacking)}, then build with --no-build-isolation "
                             f"and MAX_JOBS={jobs}", tuple(lacking)))  # fmt: skip
    return found


def _truthy(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


def _fa3_finding(
    error: str, versions: Mapping[str, Any], arch: str, gpu: bool, parts: Mapping[str, str], vars: Mapping[str, Any]
) -> Finding:
    """FA3 missing: a problem only where it could help (a GPU host) and no fallback was recorded."""
    try:
        recorded = json.loads(parts.get("stack") or "{}").get("attn_impl")
    except (json.JSONDecodeError, AttributeError):
        recorded = None
    fallback = recorded or ("flash_attention_2" if versions.get("flash_attn") else "sdpa")
    if arch == "aarch64":
        remedy = f"install the FA3 wheel (section 5), or train with ATTN_IMPL={fallback}"
    else:
        remedy = (
            f"no FA3 wheel is published for {arch or 'this architecture'} (the guide's is aarch64 only): set "
            f"fa3_wheel_url to a wheel built for this host, or train with ATTN_IMPL={fallback}"
        )
    problem = f"flash_attn_3 seems to be not installed ({error})"
    if not gpu:
        problem += "; a host without a GPU (require_gpu: false) needs none"
        return Finding("fa3-missing", problem, remedy, note=True)
    if recorded and recorded != "flash_attention_3":
        return Finding(
            "fa3-missing", problem + f"; setup recorded the fallback ATTN_IMPL={recorded}", remedy, note=True
        )
    return Finding("fa3-missing", problem, remedy)


def torch_install_text(vars: Mapping[str, Any]) -> str:
    """How the host's configured source (setup playbook `torch_channel`) installs PyTorch."""
    channel = vars.get("torch_channel", "nightly")
    if channel == "stable":
        index = vars.get("torch_stable_index", "https://download.pytorch.org/whl/cu128")
        version = vars.get("torch_version", "2.8.0")
        return f"uv pip install --index-url {index} torch=={version} torchvision==0.23.0 torchaudio=={version}"
    if channel == "source":
        return "rebuild it from source (Option B): fleet run playbooks/setup.yaml --tags torch"
    index = vars.get("torch_nightly_index", "https://download.pytorch.org/whl/nightly/cu128")
    return f"uv pip install --pre --index-url {index} torch torchvision torchaudio"


def lenient_defaults(variables: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The setup playbook's defaults that can be known before facts (a default that needs facts,
    such as torch_channel, is left out; the fix play renders it with facts)."""
    data = {"facts": variables.get("facts", {})}
    scope = layered((defaults, True), ({k: v for k, v in variables.items() if k not in data}, True), (data, False))
    merged: dict[str, Any] = dict(data)
    for name in scope:  # inventory values are templates too (venv: "{{ project_dir }}/.venv")
        try:
            merged[name] = scope[name]
        except TemplateError:
            continue
    return merged


def examine(session: Session, hosts: list[str], defaults: Mapping[str, Any], forks: int) -> dict[str, Diagnosis]:
    def work(host: str, conn: Any) -> Diagnosis:
        vars = lenient_defaults(session.hostvars(host), defaults)
        venv = str(vars.get("venv", "~/tes_grpo_trl/.venv"))
        result = conn.run(detect_script(venv), timeout=300)
        if result.timed_out:
            return Diagnosis(host, venv, error="the detection command timed out")
        arch = result.stdout.partition("@@arch")[2].partition("@@tools")[0].strip()
        vars = lenient_defaults({**session.hostvars(host), "facts": {"arch": arch}}, defaults)
        gpu = [Finding(p.id, p.text, p.remedy, command=p.fix) for p in gpu_problems(conn, host, session.hostvars(host))]
        return Diagnosis(host, venv, (*diagnose(result.stdout, venv, vars), *gpu))

    from .healthview import examine as gpu_problems

    found = each_host(session, hosts, work, forks)
    return {h: d if isinstance(d, Diagnosis) else Diagnosis(h, "", error=str(d)) for h, d in found.items()}


# ---- remedies as tasks ---------------------------------------------------------------------------
# What every uv step of the setup playbook passes: its uv environment, and the lock for installs.
UV_ARGS = {"uv": "{{ uv_bin }}", "env": "{{ uv_env }}"}
LOCKED = {**UV_ARGS, "lock": "{{ stack_lock }}", "pins": "{{ stack_pins }}"}


def _uninstall(*names: str) -> Task:
    return Task("pip", {"venv": "{{ venv }}", "packages": list(names), "state": "absent", **UV_ARGS},
                name=f"doctor: uninstall {' '.join(names)}")  # fmt: skip


def _tagged(setup: Play, *tags: str) -> list[Task]:
    return [t for t in setup.tasks if set(tags) & set(t.tags)]


def _reinstall_vllm(setup: Play, finding: Finding) -> list[Task]:
    args = {
        "venv": "{{ venv }}",
        "packages": ["vllm=={{ vllm_version }}"],
        "extra_index_url": ["{{ vllm_extra_index }}", "{{ vllm_fallback_index }}"],
        "config_settings": {"vllm:torch-backend": "auto"},
        **LOCKED,
    }
    name = "doctor: reinstall vLLM with its extra index (and the fallback index)"
    return [_uninstall("vllm"), Task("pip", args, name=name, timeout=3600)]


def _build_prereqs(setup: Play, finding: Finding) -> list[Task]:
    packages = list(finding.packages)
    args = {"venv": "{{ venv }}", "packages": packages, **LOCKED}
    return [Task("pip", args, name=f"doctor: install {' '.join(packages)}")]


def _gpu_setting(finding: Finding) -> Task:
    return Task("command", {"cmd": list(finding.command)}, name=f"doctor: nvidia-smi {' '.join(finding.command[1:])}",
                become=True)  # fmt: skip


# The remedy of each finding, as tasks: the setup playbook's own where it has them (by tag).
FIXES: dict[str, Callable[[Play, Finding], list[Task]]] = {
    "cpu-torch": lambda setup, f: [_uninstall("torch", "torchvision", "torchaudio"), *_tagged(setup, "torch")],
    "fa3-missing": lambda setup, f: _tagged(setup, "fa3"),
    "stack-broken": lambda setup, f: _tagged(setup, "vllm", "libs", "versions"),
    "vllm-missing": _reinstall_vllm,
    "build-prereqs": _build_prereqs,
    "venv-missing": lambda setup, f: _tagged(setup, "venv"),
    # GPU health (fleet.health): only the settings that are safe to change on a node in use
    "persistence-off": lambda setup, f: [_gpu_setting(f)],
    "compute-mode": lambda setup, f: [_gpu_setting(f)],
}


def fix_playbook(
    setup: Play, diagnoses: Mapping[str, Diagnosis], source: str, only: frozenset[str] = frozenset()
) -> Playbook:
    """One play per distinct set of findings, on the hosts that share it."""
    groups: dict[tuple[Finding, ...], list[str]] = {}
    for host, d in diagnoses.items():
        chosen = tuple(f for f in problems(d) if f.id in FIXES and (not only or f.id in only))
        if chosen:
            groups.setdefault(chosen, []).append(host)
    plays = []
    for findings, hosts in groups.items():
        tasks: list[Task] = []
        for finding in findings:
            tasks += [t for t in FIXES[finding.id](setup, finding) if t not in tasks]
        name = f"doctor: fix {', '.join(f.id for f in findings)}"
        plays.append(
            Play(hosts=",".join(hosts), tasks=tuple(tasks), name=name, defaults=setup.defaults,
                 base_dir=setup.base_dir, source=source)
        )  # fmt: skip
    return Playbook(source, tuple(plays))


# ---- command -------------------------------------------------------------------------------------
def show(diagnoses: Mapping[str, Diagnosis], *, as_json: bool, stage: str) -> None:
    from .report import print_line, print_table

    if as_json:
        from .events import EventWriter

        events = EventWriter()
        for host, d in diagnoses.items():
            base = {"stage": stage, "host": host, "venv": d.venv}
            if d.error:
                events.emit("doctor", **base, error=d.error)
            for f in d.findings:
                note = {"note": True} if f.note else {}
                events.emit("doctor", **base, finding=f.id, problem=f.problem, remedy=f.remedy, **note)
            if not d.error and not d.findings:
                events.emit("doctor", **base, finding=None)
        return
    rows = []
    for host, d in diagnoses.items():
        if d.error:
            rows.append((host, "unreachable", d.error, ""))
        for f in d.findings:
            rows.append((host, f"{f.id} (note)" if f.note else f.id, f.problem, f.remedy))
        if not d.error and not d.findings:
            rows.append((host, "ok", f"no known problem in {d.venv}", ""))
    print_table(rows, ("host", "finding", "problem", "remedy"), title=f"doctor ({stage})")
    bad = sorted(h for h, d in diagnoses.items() if problems(d))
    if bad and stage == "found":
        print_line(f"{len(bad)} host(s) with findings: {', '.join(bad)}; `fleet doctor --fix` applies the remedies")
    elif bad:
        print_line(f"{len(bad)} host(s) still with findings: {', '.join(bad)}; their remedies above need a person")


def problems(d: Diagnosis) -> list[Finding]:
    return [f for f in d.findings if not f.note]


def exit_code(diagnoses: Mapping[str, Diagnosis]) -> int:
    code = 2 if any(problems(d) for d in diagnoses.values()) else 0
    return code | (4 if any(d.error for d in diagnoses.values()) else 0)


def setup_play(path: str) -> Play:
    from .resources import find  # ./playbooks/... first, else the copy fleet ships

    candidates = [find(path)]
    if not Path(path).is_absolute():
        candidates.append(Path(__file__).resolve().parent.parent / path)  # a source checkout
    for candidate in candidates:
        if candidate.is_file():
            return load_playbook(candidate).plays[0]
    raise FleetError(f"doctor needs the setup playbook for its defaults and remedies: {path} not found (--playbook)")


def cmd_doctor(args: argparse.Namespace) -> int:
    from .cli import host_pattern, load_inventory_arg, run_options
    from .report import choose_reporter
    from .runner import run_playbook

    inventory: Inventory = load_inventory_arg(args.inventory, args.strict_hosts)
    hosts = inventory.require(host_pattern(args))
    setup = setup_play(args.playbook)
    options = run_options(args, check=args.check)
    with Session(inventory, options) as session:
        before = examine(session, hosts, setup.defaults, options.forks)
    show(before, as_json=args.json, stage="found")
    if not args.fix or not any(problems(d) for d in before.values()):
        return exit_code(before)
    only = frozenset(x.strip() for x in (args.only or "").split(",") if x.strip())
    unknown = sorted(only - set(FIXES))
    if unknown:
        raise FleetError(f"--only {unknown[0]!r}: not a finding (known: {', '.join(sorted(FIXES))})")
    book = fix_playbook(setup, before, f"fleet doctor ({args.playbook})", only)
    if not book.plays:
        return exit_code(before)
    reporter = choose_reporter(json_lines=args.json, verbosity=args.verbose)
    report: RunReport = run_playbook(book, inventory, options, reporter, command="doctor")
    if args.check:
        return report.exit_code
    with Session(inventory, options) as session:
        after = examine(session, [h for h in hosts if problems(before[h])], setup.defaults, options.forks)
    show(after, as_json=args.json, stage="after fix")
    return exit_code(after) | report.exit_code
