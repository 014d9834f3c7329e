#!/usr/bin/env bash
# `fleet train` on a real GPU box, through local connections, with train_grpo.py --smoke (a tiny
# random gpt-oss built in memory: nothing is downloaded):
#   1. one node on GPU 0, run to completion; `fleet train status` while it runs (steps, GPU
#      memory against the budget) and after;
#   2. a two-node run on this one host (two inventory hosts, node ranks 0/1, one GPU each,
#      rendezvous on 127.0.0.1) launched by the multi-node mode, run to completion;
#   3. the same again, one rank killed: the other node stops and the run shows failed;
#   4. one node, interrupted (fleet train stop) after its first checkpoints, a plain relaunch
#      refused, then `fleet train --resume`: the step count goes on from the checkpoint to the end;
#   5. a job that dies on an import error: the launch itself reports it failed, with the log's words;
#   6. `fleet facts` says which attention training will really use (asked of train_grpo.py there), for
#      gpt-oss and for a model without attention sinks; on a one-GPU box, a two-node launch whose rank 1
#      fails its preflight (no GPU 1) starts nothing anywhere (the barrier).
#
#   bash bench/device/train_smoke.sh                    # needs 2 GPUs for parts 2 and 3
#   TRAIN_SMOKE_PARTS=1456 bash bench/device/train_smoke.sh  # one GPU
#   TRAIN_SMOKE_CPU=1 bash bench/device/train_smoke.sh  # no GPU: the same steps on the CPU (gloo)
#
# Wheels the box lacks (trl, datasets, fleet's deps: see wheels.txt) are taken from .whl/ when
# there: only those whose distribution is not installed yet, so nothing of the box is shadowed.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
PY=$(command -v "${PYTHON:-python3}")
SITE=${TRAIN_SMOKE_SITE:-/tmp/site}
WORK=${TRAIN_SMOKE_WORK:-/tmp/fleet-train-smoke}
CPU=${TRAIN_SMOKE_CPU:-}
PARTS=${TRAIN_SMOKE_PARTS:-123456}  # e.g. 3: only the killed-rank part
# Part 1 must still run when `status` first looks: on an H200 the smoke does 60 steps in ~6 s
# (2026-12-02: it had finished before the first look), so a GPU run takes 600.
SINGLE_STEPS=${TRAIN_SMOKE_SINGLE_STEPS:-$([ -n "$CPU" ] && echo 60 || echo 600)}
FAILED=0
say() { printf '\n=== %s\n' "$*"; }
check() { if "$@"; then echo "PASS: $CHECK"; else echo "FAIL: $CHECK"; FAILED=1; fi; }

if compgen -G ".whl/*.whl" >/dev/null; then
  missing=$(PYTHONPATH="$SITE" "$PY" - <<'EOF'  # what neither the box nor an earlier run installed
import glob, importlib.metadata as md, re
for wheel in sorted(glob.glob(".whl/*.whl")):
    name = re.sub(r"[-_.]+", "-", wheel.rsplit("/", 1)[-1].split("-")[0]).lower()
    try:
        md.version(name)
    except md.PackageNotFoundError:
        print(wheel)
EOF
)
  if [ -n "$missing" ]; then
    # shellcheck disable=SC2086 # one wheel path per word
    "$PY" -m pip install -q --no-index --no-deps --target "$SITE" $missing || exit 1
  fi
fi
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"  # the jobs inherit it (local connection)
export HF_HUB_OFFLINE=1
"$PY" -c 'import torch, transformers, trl, peft, datasets, fleet; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count(), "| transformers", transformers.__version__, "| trl", trl.__version__, "| peft", peft.__version__, "| datasets", datasets.__version__)' || exit 1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv

rm -rf "$WORK" && mkdir -p "$WORK/inv"
"$PY" - "$REPO" "$WORK" "$PY" "$CPU" "$SINGLE_STEPS" <<'EOF'
import sys, yaml
repo, work, python, cpu, single_steps = sys.argv[1:6]
def host(name, device):
    vars = {"train_workdir": f"{work}/{name}", "master_addr": "127.0.0.1"}
    if not cpu:
        vars["cuda_visible_devices"] = device
    return vars
inventory = {"all": {
    "vars": {"connection": "local", "train_python": python},
    "children": {
        "single": {"hosts": {"gpu0": host("gpu0", "0")}},
        "pair": {"hosts": {"rank0": host("rank0", "0"), "rank1": host("rank1", "1")}},
    },
}}
yaml.safe_dump(inventory, open(f"{work}/inv/hosts.yaml", "w"), sort_keys=False)
def config(run, steps, script="playbooks/files/train_grpo.py", grpo=None, **job):
    body = {
        "job": {
            "run_name": run, "python": "python3", "script": f"{repo}/{script}",
            "args": ["--smoke"], "require_gpu": not cpu, "min_free_gpu_mib": 2048, "stop_timeout": 20,
            "require_modules": ["torch", "transformers", "trl", "peft", "datasets"],
            "env": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "GLOO_SOCKET_IFNAME": "lo"},
            **job,
        },
        "train": {"smoke": True, "grpo": {"max_steps": steps, "ddp_timeout": 120, **(grpo or {})}},
    }
    yaml.safe_dump(body, open(f"{work}/{run}.yaml", "w"), sort_keys=False)
config("smoke_single", int(single_steps))
config("smoke_pair", 8, multi_node=True, master_port=29533)
config("smoke_pair_kill", 5000, multi_node=True, master_port=29534)
config("smoke_resume", 80, grpo={"save_strategy": "steps", "save_steps": 10, "save_total_limit": 2})
config("dies", 1, script="tests/train_jobs/dies_on_import.py", require_modules=[])
EOF

fleet() { "$PY" -m fleet.cli "$@"; }
# status_json RUN HOSTS -> host -> status, from `fleet train status --json`, on stdout
# (its exit code says whether some job failed: not wanted here, hence `|| true` under pipefail)
# (--json is JSON Lines, one train_status event per host: folded here into host -> event)
status_json() {
  { fleet train status -i "$WORK/inv" -c "$WORK/$1.yaml" --hosts "$2" --json 2>/dev/null || true; } |
    "$PY" -c 'import json, sys; events = [json.loads(line) for line in sys.stdin if line.strip()]; print(json.dumps({e["host"]: e for e in events if e.get("event") == "train_status"}))'
}
# wait_until RUN HOSTS SECONDS PYTHON-EXPRESSION-OVER-s (s: host -> status dict)
wait_until() {
  local deadline=$((SECONDS + $3))
  while [ $SECONDS -lt $deadline ]; do
    if status_json "$1" "$2" | "$PY" -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if ($4) else 1)" 2>/dev/null; then
      return 0
    fi
    sleep 1
  done
  echo "timed out after $3 s waiting for: $4"; return 1
}
json_check() { status_json "$1" "$2" | "$PY" -c "import json,sys; s=json.load(sys.stdin); print(json.dumps(s, indent=1)); sys.exit(0 if ($3) else 1)"; }

if [[ $PARTS == *1* ]]; then
say "1. one node on GPU 0: fleet train, status while running, then to completion"
fleet train -i "$WORK/inv" -c "$WORK/smoke_single.yaml" --hosts gpu0
GPU_SHOWN=" and (s['gpu0']['gpu_memory_mib'] or 0) > 0"
[ -n "$CPU" ] && GPU_SHOWN=""  # no GPU: no GPU memory to show
CHECK="single run reaches step 5 with its GPU memory shown" check \
  wait_until smoke_single gpu0 300 "s['gpu0']['state'] == 'running' and (s['gpu0']['step'] or 0) >= 5$GPU_SHOWN"
fleet train status -i "$WORK/inv" -c "$WORK/smoke_single.yaml" --hosts gpu0
CHECK="a second launch changes nothing" check fleet train -i "$WORK/inv" -c "$WORK/smoke_single.yaml" --hosts gpu0
CHECK="single run finishes" check wait_until smoke_single gpu0 600 "s['gpu0']['state'] != 'running'"
fleet train status -i "$WORK/inv" -c "$WORK/smoke_single.yaml" --hosts gpu0
CHECK="single run finished all $SINGLE_STEPS steps" check json_check smoke_single gpu0 "s['gpu0']['state'] == 'finished' and s['gpu0']['step'] == $SINGLE_STEPS"
grep -E "model smoke|attention:|vLLM|device|peak GPU|done:" "$WORK/gpu0/runs/smoke_single/training.log"
CHECK="the real gpt-oss loading path: MXFP4 checkpoint dequantized to bf16, no KV cache, eager attention" check \
  grep -q "model smoke (gpt_oss): dtype bfloat16, quantization Mxfp4Config(dequantize=True), use_cache False" \
  "$WORK/gpu0/runs/smoke_single/training.log"
fi

if [[ $PARTS == *2* ]]; then
say "2. two nodes on this host (ranks 0/1, one GPU each, rendezvous 127.0.0.1): to completion"
fleet train -i "$WORK/inv" -c "$WORK/smoke_pair.yaml" --hosts pair
CHECK="two-node run ends" check wait_until smoke_pair pair 600 "all(v['state'] != 'running' for v in s.values())"
fleet train status -i "$WORK/inv" -c "$WORK/smoke_pair.yaml" --hosts pair
CHECK="both nodes finished 8 steps" check json_check smoke_pair pair \
  "all(v['state'] == 'finished' and v['step'] == 8 for v in s.values()) and sorted(v['node_rank'] for v in s.values()) == [0, 1]"
fleet train logs -i "$WORK/inv" -c "$WORK/smoke_pair.yaml" --hosts pair -n 4
fi

if [[ $PARTS == *3* ]]; then
say "3. two nodes again; rank 1 killed: rank 0 is stopped and the run shows failed"
fleet train -i "$WORK/inv" -c "$WORK/smoke_pair_kill.yaml" --hosts pair
CHECK="both nodes running past step 3" check \
  wait_until smoke_pair_kill pair 600 "all(v['state'] == 'running' and (v['step'] or 0) >= 3 for v in s.values())"
victim=$("$PY" - <<'EOF'
import pathlib
for p in pathlib.Path("/proc").iterdir():
    try:
        env = (p / "environ").read_bytes().split(b"\0")
        cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        continue
    tagged = any(e.startswith(b"FLEET_JOB=smoke_pair_kill@rank1/") for e in env)
    if tagged and "train_grpo.py" in cmd and "torch.distributed.run" not in cmd:
        print(p.name)
EOF
)
echo "killing rank 1's training process: $victim"
[ -n "$victim" ] && kill -9 $victim
CHECK="the whole run shows failed, nothing left running" check \
  wait_until smoke_pair_kill pair 300 "all(v['state'] == 'failed' for v in s.values())"
fleet train status -i "$WORK/inv" -c "$WORK/smoke_pair_kill.yaml" --hosts pair
left=$(grep -l -a -z -F "FLEET_JOB=smoke_pair_kill@" /proc/[0-9]*/environ 2>/dev/null | wc -l)
CHECK="no process of the killed run is left ($left)" check [ "$left" -eq 0 ]
fleet train stop -i "$WORK/inv" -c "$WORK/smoke_pair_kill.yaml" --hosts pair >/dev/null 2>&1
fi

if [[ $PARTS == *4* ]]; then
say "4. one node interrupted after its first checkpoints, then resumed: the step count goes on"
R="$WORK/gpu0/runs/smoke_resume"
fleet train -i "$WORK/inv" -c "$WORK/smoke_resume.yaml" --hosts gpu0
deadline=$((SECONDS + 300))
until [ -d "$R/checkpoint-10" ] || [ $SECONDS -ge $deadline ]; do sleep 0.5; done
fleet train stop -i "$WORK/inv" -c "$WORK/smoke_resume.yaml" --hosts gpu0
fleet train status -i "$WORK/inv" -c "$WORK/smoke_resume.yaml" --hosts gpu0
CHECK="interrupted run shows stopped before its end" check \
  json_check smoke_resume gpu0 "s['gpu0']['state'] == 'stopped' and 10 <= s['gpu0']['step'] < 80"
ls "$R"
refuse() { ! fleet train -i "$WORK/inv" -c "$WORK/smoke_resume.yaml" --hosts gpu0; }
CHECK="a plain relaunch is refused (nothing is overwritten)" check refuse
fleet train -i "$WORK/inv" -c "$WORK/smoke_resume.yaml" --hosts gpu0 --resume
CHECK="resumed run finishes" check wait_until smoke_resume gpu0 300 "s['gpu0']['state'] != 'running'"
fleet train status -i "$WORK/inv" -c "$WORK/smoke_resume.yaml" --hosts gpu0
CHECK="resumed run finished all 80 steps" check \
  json_check smoke_resume gpu0 "s['gpu0']['state'] == 'finished' and s['gpu0']['step'] == 80"
grep -E "fleet: starting|resuming from|done:" "$R/training.log"
continues() {
  "$PY" - "$R/training.log" <<'EOF'
import re, sys
log = open(sys.argv[1]).read()
before, marker, after = log.partition("resuming from ")
start = int(re.match(r"\S*checkpoint-(\d+)", after).group(1))
steps = [int(m) for m in re.findall(r"step=(\d+)/80", after)]
print(f"resumed at checkpoint {start}: steps {steps[0]}..{steps[-1]} ({len(steps)} records)")
sys.exit(0 if marker and steps == list(range(start + 1, 81)) else 1)
EOF
}
CHECK="after the resume the steps go on from the checkpoint's step to 80, none twice" check continues
fi

if [[ $PARTS == *5* ]]; then
say "5. a job that dies on an import error: the launch reports it failed"
fleet train -i "$WORK/inv" -c "$WORK/dies.yaml" --hosts gpu0 | tee "$WORK/dies.out"
CHECK="launch says failed, with the job's last words" check \
  grep -q "No module named 'fleet_test_module_that_does_not_exist'" "$WORK/dies.out"
fi

if [[ $PARTS == *6* ]]; then
say "6. what will really run (fleet facts asks train_grpo.py on the host), and the multi-node barrier"
fleet facts -i "$WORK/inv" --hosts gpu0 -c "$WORK/smoke_single.yaml"
attention() { fleet facts -i "$WORK/inv" --hosts gpu0 -c "$WORK/$1.yaml" --json | "$PY" -c "import json,sys; print(json.loads(sys.stdin.readline())['attention'])"; }
seen=$(attention smoke_single); echo "gpt-oss smoke: $seen"
CHECK="facts: gpt-oss trains with eager attention here" check [ "${seen#eager (gpt_oss attention sinks}" != "$seen" ]
mkdir -p "$WORK/tiny-llama"  # a model without attention sinks: its config only, nothing downloaded
echo '{"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 64}' >"$WORK/tiny-llama/config.json"
"$PY" - "$WORK" <<'EOF'
import sys, yaml
work = sys.argv[1]
body = yaml.safe_load(open(f"{work}/smoke_single.yaml"))
body["job"]["args"] = []
body["train"] = {"model": f"{work}/tiny-llama"}
yaml.safe_dump(body, open(f"{work}/llama.yaml", "w"), sort_keys=False)
EOF
seen=$(attention llama); echo "a sink-free model: $seen"
known() { [ -n "$seen" ] && [ "${seen#unknown}" = "$seen" ]; }
CHECK="facts: a sink-free model walks the chain on this GPU (the first implementation that can load)" check known
if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" = 1 ]; then
  # the pair's rank1 asks for GPU 1, which a one-GPU box lacks: its preflight fails, so nothing starts
  fleet train -i "$WORK/inv" -c "$WORK/smoke_pair.yaml" --hosts pair | tee "$WORK/barrier.out"
  CHECK="barrier: rank1 fails its preflight, rank0 is not started, the recap says so" check \
    grep -q "rank0: train smoke_pair: launch: not started on any node: rank1: preflight: GPU 1" "$WORK/barrier.out"
  untouched() { [ ! -e "$WORK/rank0/runs" ] && [ ! -e "$WORK/rank1/runs" ]; }
  CHECK="barrier: no run directory on either node" check untouched
fi
fi

say "result"
if [ $FAILED -eq 0 ]; then echo "ALL PASS"; else echo "SOME CHECKS FAILED"; fi
exit $FAILED
