#!/bin/sh
# What each fact group costs a GPU host (fleet/factuse.py): fleet's own facts probe of every group,
# of all but `gpu`, and of `system` alone, run 15 times each with sh as fleet runs it; the median
# wall time and the CPU per run (the probe and every program it starts). Then the all-groups facts
# as fleet parses them, so the log shows the real nvidia-smi was there.
#   sh bench/device/facts_cost.sh        (from the repository root; python3 with the stdlib only)
set -e
cd "$(dirname "$0")/../.."
python3 - <<'PY'
import resource, statistics, subprocess, sys, tempfile, time
sys.path.insert(0, ".")
from fleet.facts import parse_facts, probe_script
from fleet.factuse import ALL_GROUPS

cases = {
    "all groups": ALL_GROUPS,
    "all but gpu": frozenset({"system", "resources", "tools"}),
    "system alone": frozenset({"system"}),
}
for label, groups in cases.items():
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as fh:
        fh.write(probe_script(groups))
    walls = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(15):
        started = time.perf_counter()
        out = subprocess.run(["sh", fh.name], capture_output=True, text=True, check=True).stdout
        walls.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / 15
    print(f"facts_cost: {label:13} median wall {statistics.median(walls) * 1000:7.1f} ms, cpu {cpu * 1000:6.1f} ms per run")
facts = parse_facts(subprocess.run(["sh", "-c", probe_script(ALL_GROUPS)], capture_output=True, text=True).stdout)
print(f"facts_cost: parsed: arch {facts.arch}, driver {facts.driver}, cuda {facts.cuda}, gpus {facts.gpu_count} x {facts.gpu_name}, nvcc {facts.cuda_toolkit}")
PY
