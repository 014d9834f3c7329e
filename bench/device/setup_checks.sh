#!/usr/bin/env bash
# The setup playbook's checks on a real GPU machine, through the local connection: `fleet facts`,
# the preflight (driver, CUDA, nvidia-smi) against the real driver, the Python checks against the
# torch installed there, stack recording (run twice: the second run must change nothing), the FA3
# fallback marking, the recap note, and `fleet doctor`'s detection.
#
# One command, from the repository root:    bash bench/device/setup_checks.sh
# It prints PASS/FAIL per check and exits 0 only when every check passed.
#
# The machine: x86_64 Ubuntu 24.04, python3 3.12 with torch (CUDA build) and transformers; no uv,
# trl, vllm, flash-attn or fabric, and no network. Nothing is installed: fleet runs from this
# checkout with its dependencies unpacked from wheels into a temp folder; HOME is a temp folder too,
# so the stack fact and ~/.fleet/env.sh land there. The checks use the system Python as the "venv"
# (-e venv=<sys.prefix>, i.e. /usr/bin/python3).
#
# Carry: the folder .whl/ (or set FLEET_WHEELS=DIR) with these x86_64 cp312 wheels (13 MB; made by
#   pip download --only-binary=:all: --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux_2_17_x86_64 --python-version 3.12 --implementation cp -d .whl \
#     fabric==3.2.3 paramiko==5.1.0 pyyaml==6.0.3 jinja2==3.1.6 rich==15.0.0 pydantic==2.13.4 packaging==26.2):
#   needed for a local run:  pyyaml-6.0.3 (cp312 manylinux), jinja2-3.1.6, markupsafe-3.0.4 (cp312),
#     rich-15.0.0, markdown_it_py-4.3.0, mdurl-0.1.2, pygments-2.21.0, pydantic-2.13.4,
#     pydantic_core-2.46.4 (cp312 manylinux), annotated_types-0.8.0, typing_extensions-4.16.0,
#     typing_inspection-0.4.5, packaging-26.2
#   SSH only (imported lazily; unpacked if present): fabric-3.2.3, paramiko-5.1.0, invoke-2.2.1,
#     decorator-5.3.1, deprecated-3.0.1, wrapt-2.5.2 (cp312), bcrypt-5.0.0 (abi3), cryptography-50.0.2
#     (abi3), cffi-2.1.1 (cp312), pycparser-3.12, pynacl-1.6.2 (abi3)
#
# Expected on such a machine: every check PASS; the section-6 versions check fails on purpose with
# "No module named 'vllm'" (no vLLM there) and is counted as PASS when it says exactly that.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
REPO=$PWD
PY=${PYTHON:-python3}
WHEELS=${FLEET_WHEELS:-.whl}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fleet-setup-checks.XXXXXX")
SITE=$WORK/site
export HOME=$WORK/home
mkdir -p "$HOME" "$SITE"
trap 'rm -rf "$WORK"' EXIT

# ---- fleet's dependencies, unpacked from wheels (no pip, no network) ------------------------------
if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  echo "FAIL  no wheels in $WHEELS (carry .whl/ or set FLEET_WHEELS; see this script's header)"; exit 2
fi
"$PY" -I - "$WHEELS" "$SITE" <<'PY' || exit 2
import pathlib, sys, zipfile
wheels, site = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
PY
fleet() { "$PY" -I -c 'import sys; sys.path[:0] = sys.argv[1:3]; del sys.argv[1:3]; sys.argv[0] = "fleet"
from fleet.cli import main; sys.exit(main())' "$SITE" "$REPO" "$@"; }
judge() { "$PY" -I - "$SITE" "$@"; }  # a Python snippet on stdin, with fleet's deps importable

PASSED=0; FAILED=0
verdict() {  # verdict NAME STATUS DETAIL
  if [ "$2" = 0 ]; then PASSED=$((PASSED + 1)); echo "PASS  $1  $3"; else FAILED=$((FAILED + 1)); echo "FAIL  $1  $3"; fi
}
VENV=$("$PY" -I -c 'import sys; print(sys.prefix)')
# FLEET_CHECK_ARGS: extra fleet arguments, only to rehearse this script off the GPU machine
# (e.g. "-e @facts_override.yaml"); empty on the GPU machine.
read -r -a EXTRA <<<"${FLEET_CHECK_ARGS:-}"
COMMON=(-i inventories/local -e "venv=$VENV" "${EXTRA[@]}")
echo "== fleet setup checks on $(hostname), python $("$PY" -V 2>&1), venv=$VENV, HOME=$HOME"

# ---- 1. fleet facts ----------------------------------------------------------------------------------
fleet facts -i inventories/local
fleet facts -i inventories/local --json >"$WORK/facts1.json"
detail=$(judge "$WORK/facts1.json" <<'PY'
import json, sys; sys.path.insert(0, sys.argv[1])
from packaging.version import Version
f = next(iter(json.load(open(sys.argv[2])).values()))
problems = []
if not f.get("gpus"): problems.append("no GPU in facts (%s)" % f.get("gpu_error"))
if not f.get("driver") or Version(f["driver"]) < Version("570.148.08"): problems.append("driver %s" % f.get("driver"))
if not f.get("cuda") or Version(f["cuda"]) < Version("12.8"): problems.append("cuda %s" % f.get("cuda"))
print(("; ".join(problems) + " | ") if problems else "", end="")
print("arch %s, driver %s, CUDA %s, %d GPU(s): %s" % (f["arch"], f["driver"], f["cuda"], len(f["gpus"]), f["gpu_name"]))
sys.exit(1 if problems else 0)
PY
); verdict "facts: arch, driver >= 570.148.08, CUDA >= 12.8, GPUs" $? "$detail"
GPU_NAME=$(judge "$WORK/facts1.json" <<'PY'
import json, sys
print(next(iter(json.load(open(sys.argv[2])).values())).get("gpu_name") or "")
PY
)

# ---- 2. the setup playbook's checks, twice ---------------------------------------------------------
CHECKS=(run playbooks/setup.yaml "${COMMON[@]}" --tags preflight,verify --skip-tags versions -e "expected_gpu=$GPU_NAME")
fleet "${CHECKS[@]}" --json >"$WORK/run1.jsonl"; rc1=$?
fleet "${CHECKS[@]}" --json >"$WORK/run2.jsonl"; rc2=$?
detail=$(judge "$WORK/run1.jsonl" "$WORK/run2.jsonl" "$rc1" "$rc2" <<'PY'
import json, sys
def load(path):
    events = [json.loads(line) for line in open(path)]
    return ({e["task"]: e for e in events if e["event"] == "task_result"}, [e for e in events if e["event"] == "recap"][0])
(t1, r1), (t2, r2) = load(sys.argv[2]), load(sys.argv[3])
for name, e in t1.items():
    print("      %-8s %s  %s" % ("ignored" if e.get("ignored") else e["status"], name, e["message"]), file=sys.stderr)
for note in r1.get("notes", []):
    print("      note: %s" % note, file=sys.stderr)
problems = []
want_ok = ["preflight: architecture", "preflight: nvidia-smi works", "preflight: NVIDIA driver", "preflight: CUDA runtime",
           "torch imports and sees the GPU (section 2)", "GPU monitor answers (section 6, nvidia-smi dmon)"]
for name in want_ok:
    if t1.get(name, {}).get("status") != "ok":
        problems.append("%s: %s" % (name, t1.get(name, {}).get("message", "did not run")))
stack = t1.get("training stack and attention choice, for `fleet facts`", {})
if stack.get("status") != "changed": problems.append("stack not recorded on the first run: %s" % stack.get("message"))
fa3 = t1.get("flash_attn_3 imports (section 5)", {})
fa3_ok = fa3.get("status") == "ok"
if not fa3_ok and not fa3.get("ignored"): problems.append("FA3 import failure was not ignored")
if not fa3_ok and not any("this host trains with" in n for n in r1.get("notes", [])):
    problems.append("no recap note about the attention fallback")
if sys.argv[4] != "0" or r1["failed"]: problems.append("first run rc %s, failed %s" % (sys.argv[4], r1["failed"]))
if sys.argv[5] != "0" or r2["changed"] or r2["failed"]:
    changed = [n for n, e in t2.items() if e["status"] == "changed"]
    problems.append("second run rc %s, changed %s %s, failed %s" % (sys.argv[5], r2["changed"], changed, r2["failed"]))
print(("; ".join(problems) + " | ") if problems else "", end="")
print("%s | %s | second run: changed=%d, %d commands" % (
    t1.get("torch imports and sees the GPU (section 2)", {}).get("message"), stack.get("message"), r2["changed"], r2["commands"]))
sys.exit(1 if problems else 0)
PY
); verdict "setup.yaml preflight+verify, twice (2nd changed=0)" $? "$detail"

# ---- 3. the section-6 versions check names what is missing -------------------------------------------
fleet run playbooks/setup.yaml "${COMMON[@]}" --tags versions --json >"$WORK/run3.jsonl"; rc3=$?
detail=$(judge "$WORK/run3.jsonl" "$rc3" <<'PY'
import importlib.util, json, sys
events = [json.loads(line) for line in open(sys.argv[2])]
checks = [e for e in events if e["event"] == "task_result" and e["task"] == "versions check (section 6)"]
if not checks:
    print("the check did not run: %s" % [e.get("message") for e in events if e.get("status") == "failed"])
    sys.exit(1)
check = checks[0]
missing = [m for m in ("torch", "vllm", "transformers", "trl") if importlib.util.find_spec(m) is None]
if missing:
    ok = check["status"] == "failed" and ("No module named '%s'" % missing[0]) in check["message"] and sys.argv[3] == "2"
else:
    ok = check["status"] == "ok"
print("%s: %s (missing here: %s)" % (check["status"], check["message"], ", ".join(missing) or "none"))
sys.exit(0 if ok else 1)
PY
); verdict "section 6 versions check says what is missing" $? "$detail"

# ---- 4. fleet facts shows the recorded stack -----------------------------------------------------
fleet facts -i inventories/local
fleet facts -i inventories/local --json >"$WORK/facts2.json"
detail=$(judge "$WORK/facts2.json" <<'PY'
import json, sys
f = next(iter(json.load(open(sys.argv[2])).values()))
s = f.get("custom", {}).get("stack", {})
problems = []
try:
    import torch  # the machine's own torch: the recorded stack must say the same
    if s.get("torch") != str(torch.__version__): problems.append("torch %s != %s" % (s.get("torch"), torch.__version__))
    if s.get("torch_cuda") != torch.version.cuda:
        problems.append("torch_cuda %s != %s" % (s.get("torch_cuda"), torch.version.cuda))
except ImportError as exc:
    problems.append("this Python has no torch (%s)" % exc)
if s.get("attn_impl") not in ("flash_attention_3", "flash_attention_2", "sdpa"): problems.append("attn_impl %r" % s.get("attn_impl"))
print(("; ".join(problems) + " | ") if problems else "", end="")
print(json.dumps(s, sort_keys=True))
sys.exit(1 if problems else 0)
PY
); verdict "facts show the stack (torch + CUDA, attn)" $? "$detail"

# ---- 5. fleet doctor: a CUDA torch is not flagged; what is missing is ------------------------------
fleet doctor "${COMMON[@]}"
fleet doctor "${COMMON[@]}" --json >"$WORK/doctor.jsonl"
detail=$(judge "$WORK/doctor.jsonl" <<'PY'
import importlib.util, json, sys
found = {e["finding"] for e in map(json.loads, open(sys.argv[2])) if e.get("finding")}
want = set()
if importlib.util.find_spec("flash_attn_3") is None: want.add("fa3-missing")
if importlib.util.find_spec("vllm") is None: want.add("vllm-missing")
problems = []
if "cpu-torch" in found: problems.append("a CUDA torch was flagged as CPU-only")
if not want <= found: problems.append("missing findings: %s" % sorted(want - found))
print(("; ".join(problems) + " | ") if problems else "", end="")
print("findings: %s" % (", ".join(sorted(found)) or "none"))
sys.exit(1 if problems else 0)
PY
); verdict "doctor: detection against the real torch" $? "$detail"

echo "== $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
