"""`fleet train`'s pure parts: config, per-node launch specs, rendezvous, preflight decisions, the
parsers of the remote scripts' output, and the multi-node failure rule. No host is touched here."""

from __future__ import annotations

import base64
import importlib.util
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from conftest import RECORDED, REPO

from fleet.cli import build_parser
from fleet.facts import Facts, parse_gpu_csv
from fleet.model import FleetError
from fleet.train.config import GPU_BUDGET_MIB, load_config
from fleet.train.jobs import (
    PEER_PREFIX,
    STOPPED_BY_USER,
    GpuUse,
    Imports,
    JobState,
    Preflight,
    gpu_use,
    parse_imports,
    parse_progress,
    parse_state,
    parse_stop,
    wrapper_script,
)
from fleet.train.plan import imports_failure, launch_barrier, node_specs, plan_launch, preflight_failure
from fleet.train.rendezvous import LEFTOVERS, peers_to_stop, plan_rendezvous

FILES = REPO / "playbooks" / "files"


def _train_grpo():
    spec = importlib.util.spec_from_file_location("train_grpo", FILES / "train_grpo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # module level imports only the standard library
    return module


def write_config(tmp_path: Path, job: dict, name: str = "cfg.yaml", train: dict | None = None) -> Path:
    script = tmp_path / "job.py"
    script.write_text("print('hi')\n")
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"job": {"script": "job.py", **job}, "train": train or {"smoke": True}}))
    return path


# ---- config --------------------------------------------------------------------------------------
def test_shipped_configs_load():
    real = load_config(FILES / "train_config.yaml")
    assert real.job.run_name == "grpo_gptoss20b_lora4_tes"  # the guide's log folder
    assert real.job.gpu_memory_budget_mib == GPU_BUDGET_MIB == 97871
    smoke = load_config(FILES / "train_config.smoke.yaml")
    assert smoke.job.args == ["--smoke"] and not smoke.job.require_gpu


def test_config_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {}\njob:\n  run_name: x\n  nproc_per_node: 0\n  colour: red\n")
    with pytest.raises(FleetError) as err:
        load_config(bad)
    text = str(err.value)
    assert f"{bad}:3" in text and "colour" in text and "nproc_per_node" in text
    with pytest.raises(FleetError, match="run name"):
        load_config(write_config(tmp_path, {"run_name": "../escape"}))
    with pytest.raises(FleetError, match="not found"):
        load_config(write_config(tmp_path, {"files": ["missing.txt"]}))


def test_cli_options_before_or_after_the_action_word():
    parser = build_parser()
    before = parser.parse_args(["train", "--hosts", "gh200-01", "-c", "x.yaml", "stop"])
    after = parser.parse_args(["train", "stop", "--hosts", "gh200-01", "-c", "x.yaml"])
    for args in (before, after):
        assert (args.pattern, args.config, args.handler.__name__) == ("gh200-01", "x.yaml", "cmd_stop")
    launch = parser.parse_args(["train", "--hosts", "gh200-*"])
    assert launch.handler.__name__ == "cmd_launch" and launch.pattern == "gh200-*"
    logs = parser.parse_args(["train", "logs", "-f", "--forks", "3"])
    assert logs.follow and logs.forks == 3


# ---- launch specs and rendezvous -------------------------------------------------------------------
def test_single_node_spec_env_and_command(tmp_path):
    config = load_config(write_config(tmp_path, {"run_name": "r1", "args": ["--smoke"], "env": {"A": "b c"}}))
    hostvars = {"gh200-01": {"address": "10.0.0.1", "attn_impl": "flash_attention_3", "cuda_visible_devices": "1"}}
    spec = node_specs(config, ["gh200-01"], hostvars, "L1")["gh200-01"]
    assert spec.argv == (".venv/bin/python", "job.py", "--config", "cfg.yaml", "--smoke")
    assert spec.env["CUDA_VISIBLE_DEVICES"] == "1" and spec.env["FLEET_GPU_BUDGET_MIB"] == "97871"
    assert spec.tag == "r1@gh200-01/L1" and spec.meta["nnodes"] == 1 and spec.meta["gpus"] == [1]
    script = wrapper_script(spec)
    assert "export A='b c'\n" in script  # every value quoted
    assert script.index("job.pid") < script.index("job.py --config") < script.index("mv -f")


def test_multi_node_rendezvous_follows_inventory_order(tmp_path):
    config = load_config(write_config(tmp_path, {"multi_node": True, "nproc_per_node": 2, "master_port": 29555}))
    hosts = ["gh200-01", "gh200-02", "gh200-03"]
    hostvars = {h: {"address": f"10.0.0.{i}"} for i, h in enumerate(hosts, 1)}
    specs = node_specs(config, hosts, hostvars, "L2")
    for rank, host in enumerate(hosts):
        argv = list(specs[host].argv)
        assert argv[:3] == [".venv/bin/python", "-m", "torch.distributed.run"]
        assert argv[argv.index("--node_rank") + 1] == str(rank)
        assert argv[argv.index("--master_addr") + 1] == "10.0.0.1"
        assert argv[argv.index("--nnodes") + 1] == "3" and "--max_restarts" in argv
        assert specs[host].env["WORLD_SIZE"] == "6" and specs[host].env["NODE_RANK"] == str(rank)
    # two "nodes" on one two-GPU machine: loopback rendezvous, one GPU each, own workdirs
    local = {
        "a": {"connection": "local", "master_addr": "127.0.0.1", "cuda_visible_devices": "0", "train_workdir": "~/a"},
        "b": {"connection": "local", "master_addr": "127.0.0.1", "cuda_visible_devices": "1", "train_workdir": "~/b"},
    }
    rdzv = plan_rendezvous(["a", "b"], local, 29500, {"a": 1, "b": 1})
    assert [(r.master_addr, r.node_rank, r.world_size) for r in rdzv.values()] == [
        ("127.0.0.1", 0, 2),
        ("127.0.0.1", 1, 2),
    ]
    shared = {h: {k: v for k, v in hv.items() if k != "train_workdir"} for h, hv in local.items()}
    with pytest.raises(FleetError, match="train_workdir"):
        node_specs(config, ["a", "b"], shared, "L3")


# ---- preflight ------------------------------------------------------------------------------------
def _recorded_gpus(used_mib: int | None = None):
    """The H200 of tests/recorded (its --query-gpu line); `used_mib` changes the used memory."""
    line = (RECORDED / "h200-nvidia-smi-busy.txt").read_text().splitlines()[0]
    if used_mib is not None:
        cells = line.split(", ")
        cells[4] = str(used_mib)
        line = ", ".join(cells)
    return parse_gpu_csv(line)[0]


def _preflight(*, state="absent", shas=None) -> Preflight:
    return Preflight(JobState(state, pid=12 if state == "running" else None), shas or {})


def _facts(gpus=(), stack=None) -> Facts:
    return Facts(gpus=tuple(gpus), custom={"stack": stack} if stack else {})


def test_preflight_refuses_unfit_hosts(tmp_path):
    config = load_config(write_config(tmp_path, {"min_free_gpu_mib": 100000, "require_stack": True}))
    spec = node_specs(config, ["h"], {"h": {}}, "L")["h"]
    stack = {"torch": "2.8.0", "attn_impl": "flash_attention_3"}
    assert "not found" in imports_failure(spec, Imports(False, ()))
    broken = parse_imports("ok\ncannot-import trl ImportError: x\n")
    assert "cannot import trl (ImportError: x)" in imports_failure(spec, broken)
    assert "the import check itself crashed" in imports_failure(spec, parse_imports("ok\n"))
    assert imports_failure(spec, parse_imports("ok\nimports-done\n")) is None
    assert "setup playbook" in preflight_failure(spec, _facts(_recorded_gpus()), config)
    assert "no GPU" in preflight_failure(spec, _facts(stack=stack), config)
    busy = preflight_failure(spec, _facts(_recorded_gpus(used_mib=60000), stack), config)
    assert "83771 MiB free" in busy  # 143771 total - 60000 used
    assert preflight_failure(spec, _facts(_recorded_gpus(), stack), config) is None
    pinned = node_specs(config, ["h"], {"h": {"cuda_visible_devices": "3"}}, "L")["h"]
    assert "GPU 3" in preflight_failure(pinned, _facts(_recorded_gpus(), stack), config)


def test_launch_plan_syncs_only_changed_files_and_skips_running_jobs(tmp_path):
    import hashlib

    job = {"require_gpu": False, "require_modules": []}
    config = load_config(write_config(tmp_path, job, train={"model": "Qwen/Qwen3-8B"}))
    spec = node_specs(config, ["h"], {"h": {}}, "L")["h"]
    stack = {"attn_impl": "flash_attention_2"}
    fresh = plan_launch(spec, _preflight(), _facts(stack=stack), config, {})
    assert fresh.data["synced"] == ["cfg.yaml", "job.py"] and fresh.data["attn_impl"] == "flash_attention_2"
    assert "setsid sh" in fresh.script
    uploaded = [base64.b64decode(b).decode() for b in re.findall(r"printf %s (\S+) \| base64 -d", fresh.script)]
    assert any("export ATTN_IMPL=flash_attention_2\n" in text for text in uploaded)  # in job.sh
    same = {
        "job.py": hashlib.sha256(b"print('hi')\n").hexdigest(),
        "cfg.yaml": hashlib.sha256(config.content).hexdigest(),
    }
    again = plan_launch(spec, _preflight(shas=same), _facts(), config, {"attn_impl": "sdpa"})
    assert again.data["synced"] == [] and "ATTN_IMPL=sdpa (host var)" in again.summary
    running = plan_launch(spec, _preflight(state="running"), _facts(), config, {})
    assert running.script is None and not running.fail and "already running" in running.summary
    leftover = replace(_preflight(), state=JobState("failed", exit_code=137, procs=frozenset({77})))
    assert "77" in plan_launch(spec, leftover, _facts(), config, {}).fail  # never lose track of live processes


def test_the_launch_asks_train_grpo_which_attention_it_will_use(tmp_path):
    """fleet passes the request (host var, config env, setup stack) and asks the script itself:
    train_grpo.py alone decides per model (eager for gpt-oss's sinks)."""
    job = {"require_gpu": False, "require_modules": []}
    config = load_config(write_config(tmp_path, job, train={"model": "openai/gpt-oss-20b"}))
    spec = node_specs(config, ["h"], {"h": {}}, "L")["h"]
    plan = plan_launch(spec, _preflight(), _facts(stack={"attn_impl": "flash_attention_3"}), config, {})
    assert "ATTN_IMPL=flash_attention_3 (setup stack)" in plan.summary  # asked for; the script may refuse
    assert "--which-attention" not in plan.script  # job.py is not fleet's training script
    (tmp_path / "train_grpo.py").write_text("print('hi')\n")
    grpo = load_config(write_config(tmp_path, {**job, "script": "train_grpo.py"}, name="g.yaml"))
    spec = node_specs(grpo, ["h"], {"h": {}}, "L")["h"]
    assert "--which-attention" in plan_launch(spec, _preflight(), _facts(), grpo, {}).script
    train_grpo = _train_grpo()
    assert train_grpo.attention_candidates("flash_attention_3", "gpt_oss") == ["eager"]
    assert train_grpo.attention_candidates(None, "llama") == ["flash_attention_3", "flash_attention_2", "sdpa", "eager"]


def test_multi_node_barrier_starts_every_node_or_none():
    ready = {"mode": "new"}
    nodes = ["n1", "n2", "n3"]
    assert launch_barrier(nodes, {"n1": ready, "n2": ready, "n3": ready}) == dict.fromkeys(nodes)
    blocked = launch_barrier(nodes, {"n1": ready, "n2": "preflight: python 'x' not found", "n3": ready})
    assert set(blocked) == {"n1", "n3"}
    assert blocked["n1"] == "not started on any node: n2: preflight: python 'x' not found"
    assert launch_barrier(nodes, {"n1": ready, "n2": ready})["n1"] == "not started on any node: n3: no answer"
    partly = launch_barrier(nodes, {"n1": {"running": True}, "n2": ready, "n3": ready})
    assert partly["n1"] is None and "already running on n1 but not on every node" in partly["n2"]
    resumes = {h: {"mode": "resume", "checkpoint": f"checkpoint-{i}"} for i, h in enumerate(nodes)}
    assert all("checkpoints differ" in why for why in launch_barrier(nodes, resumes).values())


# ---- parsing what the hosts said ------------------------------------------------------------------
def test_step_line_round_trip():
    train_grpo = _train_grpo()
    line = train_grpo.step_line(7, 500, {"loss": 0.0123, "reward": -0.5, "grad_norm": float("nan"), "epoch": 1})
    assert line.startswith("step=7/500 loss=0.0123 reward=-0.5")
    assert parse_progress(f"2026-11-27 12:00:00 INFO {line}") == parse_progress(line)
    progress = parse_progress(line)
    assert (progress.step, progress.max_steps, progress.loss, progress.reward) == (7, 500, 0.0123, -0.5)
    assert parse_progress("no steps here").step is None


def test_attention_chain():
    train_grpo = _train_grpo()
    assert train_grpo.attention_candidates(None) == ["flash_attention_3", "flash_attention_2", "sdpa", "eager"]
    assert train_grpo.attention_candidates("flash_attention_2") == ["flash_attention_2", "sdpa", "eager"]
    assert (
        train_grpo.attention_candidates("kernels-community/vllm-flash-attn3")[0] == "kernels-community/vllm-flash-attn3"
    )


def test_gpu_use_from_recorded_nvidia_smi():
    # tests/recorded/h200-nvidia-smi-busy.txt shows pid 465 holding 776 MiB of the H200 (785 MiB
    # used in all). fleet asks nvidia-smi for the same values with the GPU's UUID (from
    # h200-nvidia-smi-q.txt) in each row, so that a job is matched to its GPUs.
    q = (RECORDED / "h200-nvidia-smi-q.txt").read_text()
    uuid = next(line.split(":", 1)[1].strip() for line in q.splitlines() if "GPU UUID" in line)
    gpus = f"0, {uuid}, 785, 143771\n"
    apps = f"465, {uuid}, 776\n"
    assert gpu_use(gpus, apps, frozenset({465, 466}), None) == GpuUse(776, whole_gpu=False)
    # the job's processes invisible to nvidia-smi (another pid namespace): the GPU's use instead
    assert gpu_use(gpus, "", frozenset({9}), [0]) == GpuUse(785, whole_gpu=True)
    assert gpu_use(gpus, apps, frozenset(), None) is None  # not running: nothing to show
    assert gpu_use("", "", frozenset({9}), None) is None  # no nvidia-smi


def _state_text(**lines: str) -> str:
    body = "\n".join(f"{k} {v}" for k, v in lines.items())
    return f"\n@@train_state\nnow 1000\n{body}\n@@train_step\nstep=3/10 loss=0.5 reward=1\n@@train_tail\nlast line\n"


def test_parse_state_decides_the_state():
    running = parse_state(_state_text(pid="40", started="900", procs="40 41"))
    assert (running.state, running.runtime, running.progress.step) == ("running", 100, 3)
    assert parse_state(_state_text(pid="40", started="900", exit="0 950")).state == "finished"
    crashed = parse_state(_state_text(pid="40", started="900", exit="7 950"))
    assert (crashed.state, crashed.exit_code, crashed.runtime) == ("failed", 7, 50)
    assert "exit code 7: last line" in crashed.note
    assert parse_state(_state_text(pid="40")).state == "lost"
    assert parse_state(_state_text()).state == "absent"
    stopped = parse_state(_state_text(pid="40", stopped=f"960 {STOPPED_BY_USER}"))
    assert stopped.state == "stopped"
    peer = parse_state(_state_text(pid="40", stopped=f"960 {PEER_PREFIX}n1 failed (exit code 1)"))
    assert peer.state == "failed" and "n1" in peer.note
    orphans = parse_state(_state_text(pid="40", exit="137 950", procs="77"))  # torchrun killed, worker alive
    assert orphans.state == "failed" and orphans.leftovers == {77} and "77" in orphans.note


def test_parse_stop():
    assert not parse_stop("not-running\n").was_running
    gone = parse_stop("stopped 5 6\nleft \n")
    assert gone.was_running and not gone.left
    stuck = parse_stop("killed 6\nstopped 5 6\nleft 6\n")
    assert stuck.killed == (6,) and stuck.left == (6,)


def test_one_dead_node_fails_the_run():
    def node(state: str, launch: str = "L", **kw) -> JobState:
        return JobState(state, meta={"launch_id": launch, "nnodes": 3}, **kw)

    states = {"n1": node("running", procs=frozenset({1})), "n2": node("failed", exit_code=1), "n3": node("running")}
    assert peers_to_stop(states) == {"n1": "peer n2 failed (exit code 1)", "n3": "peer n2 failed (exit code 1)"}
    assert peers_to_stop({"n1": node("running"), "n2": node("running")}) == {}
    lost = peers_to_stop({"n1": node("lost"), "n2": node("running")})
    assert lost == {"n2": "peer n1 lost"}
    # the failed node's own leftovers (torchrun killed, its worker alive) are stopped too
    orphan = {"n1": node("failed", exit_code=137, procs=frozenset({5})), "n2": node("running")}
    assert peers_to_stop(orphan) == {"n1": LEFTOVERS, "n2": "peer n1 failed (exit code 137)"}
    # single-node runs and other launches are left alone
    single = {"a": JobState("failed", meta={"launch_id": "X", "nnodes": 1}), "b": node("running")}
    assert peers_to_stop(single) == {}


def test_remote_scripts_are_valid_sh(tmp_path):
    """Every script fleet sends parses in sh (`sh -n`), with hostile names quoted."""
    from fleet.train import jobs

    config = load_config(write_config(tmp_path, {"env": {"X": "it's $(rm -rf ~)"}}))
    spec = node_specs(config, ["h"], {"h": {"train_workdir": "~/work dir"}}, "L")["h"]
    scripts = [
        jobs.state_probe(spec.paths),
        jobs.preflight_probe(spec.paths, ["job.py"]),
        jobs.imports_probe(spec.paths, ".venv/bin/python", ["torch", "trl"]),
        jobs.launch_script(spec, {"job.py": b"x"}),
        jobs.launch_script(spec, {}, wait=5, attention=jobs.attention_check("~/w d", "py", b"x'$", b"y", spec.env)),
        jobs.wrapper_script(spec),
        jobs.stop_script(spec.paths, "why's", 5),
        jobs.follow_script(spec.paths, 10),
    ]
    for script in scripts:
        check = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
        assert check.returncode == 0, check.stderr + script
    assert "export X='it'\"'\"'s $(rm -rf ~)'" in jobs.wrapper_script(spec)
