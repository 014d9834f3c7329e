#!/usr/bin/env bash
# GPU health on a real GPU machine, through the local connection: `fleet facts` (health column and
# the --json fields), `fleet health` (exit 0 on a healthy machine; exit 2 and one line when the
# inventory expects more GPUs than the machine has), the raw nvidia-smi answer beside fleet's
# reading of it, and what the health part adds to the facts command's time.
#
# One command, from the repository root:    bash bench/device/health_checks.sh
# It prints PASS/FAIL per check and exits 0 only when every check passed.
#
# Needs python3 with pyyaml and rich (the H200 image has both); `fleet facts` and `fleet health`
# import neither pydantic, jinja2 nor fabric, so no wheels travel. HOME is a temp folder.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fleet-health-checks.XXXXXX")
export HOME=$WORK/home
mkdir -p "$HOME"
trap 'rm -rf "$WORK"' EXIT
fleet() { "$PY" -m fleet.cli "$@" -i inventories/local; }

PASSED=0; FAILED=0
verdict() {  # verdict NAME STATUS DETAIL
  if [ "$2" = 0 ]; then PASSED=$((PASSED + 1)); echo "PASS  $1  $3"; else FAILED=$((FAILED + 1)); echo "FAIL  $1  $3"; fi
}

echo "== the machine"; nvidia-smi -L; uname -m; id -un
echo "== raw health query"
"$PY" -c 'from fleet.health import QUERY_FIELDS; print(QUERY_FIELDS)' | xargs -I{} nvidia-smi --query-gpu={} --format=csv
echo "== kernel log: NVRM lines / Xid lines: $(dmesg 2>/dev/null | grep -c NVRM) / $(dmesg 2>/dev/null | grep -c 'NVRM: Xid')"

echo "== fleet facts"
fleet facts; rc=$?
verdict "facts" "$rc" "exit $rc"
fleet facts --json >"$WORK/facts.json"
"$PY" - "$WORK/facts.json" <<'PY'
import json, sys
host = json.load(open(sys.argv[1]))["localhost"]
print(json.dumps({k: host[k] for k in ("gpu_count", "driver", "cuda", "healthy", "health_problems", "health")}, indent=1))
h = host["health"]
ok = h is not None and len(h["gpus"]) == host["gpu_count"] > 0 and all(g["uuid"].startswith("GPU-") for g in h["gpus"])
ok = ok and h["xid_source"] in ("dmesg", "journal", "none")
sys.exit(0 if ok else 1)
PY
verdict "facts-json" "$?" "every GPU with its health fields, the Xid source named"

echo "== fleet health"
out=$(fleet health); rc=$?; echo "$out"
verdict "health" "$rc" "exit $rc: $out"
n=$(nvidia-smi -L | grep -c '^GPU ')
out=$(fleet health -e expected_gpus=$((n + 1))); rc=$?; echo "$out"
[ "$rc" = 2 ] && [ "$out" = "localhost: $n of $((n + 1)) GPUs found (seen: $(seq -s ', ' -f 'GPU%g' 0 $((n - 1))))" ]
verdict "health-missing-gpu" "$?" "exit $rc: $out"

echo "== time of the facts command with and without its health part (5 runs each, seconds)"
"$PY" - <<'PY'
import statistics, subprocess, time
from fleet.facts import PROBE, SYSTEM_PROBE
from fleet.healthview import SCRIPT
def median(script):
    runs = []
    for _ in range(5):
        t = time.perf_counter(); subprocess.run(["sh"], input=script, capture_output=True, text=True, check=True)
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)
base, full, health = median(SYSTEM_PROBE + "s end\n"), median(PROBE), median(SCRIPT)
print(f"facts without health {base:.3f}  facts with health {full:.3f}  (+{full - base:.3f})  fleet health's script {health:.3f}")
PY

echo "== $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
