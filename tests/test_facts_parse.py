"""Facts parsing against real output.

The probe output is made by running the real PROBE on this machine (no GPU here), then the
nvidia-smi and nvcc sections are replaced by the output recorded on a real H200 machine
(tests/recorded/h200-host-probe.txt). The GH200 case is DERIVED from that same recorded output by
changing values only (name, driver, CUDA, memory, arch): no GH200 output was recorded.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import pytest
from conftest import RECORDED, by_host, run_fleet
from fakegpu import recorded_trace

from fleet.facts import PROBE, parse_facts, parse_gpu_csv, parse_os_release, sections
from fleet.factsview import gpu_memory_text, gpu_text
from fleet.templating import evaluate

GPU_QUERY = "--query-gpu=index,name,driver_version,memory.total,memory.used,compute_cap --format=csv,noheader,nounits"


REC = recorded_trace("h200-host-probe.txt")
H200_SMI_HEAD = "".join(REC["nvidia-smi"].splitlines(keepends=True)[:5])  # what PROBE's `| head -n 5` keeps
H200_GPU_CSV = REC[f"nvidia-smi {GPU_QUERY}"]
H200_NVCC = REC["nvcc --version"]


def run_probe(home) -> str:
    """The real PROBE, run by sh on this machine with the given home."""
    done = subprocess.run(
        ["sh"],
        input=PROBE,
        capture_output=True,
        text=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def splice(probe_output: str, replacements: dict[str, str]) -> str:
    """probe_output with the named sections' bodies replaced (kept in PROBE's order and format)."""
    lines, skipping = [], False
    for line in probe_output.splitlines():
        if line.startswith("@@"):
            name = line[2:]
            skipping = name in replacements
            lines.append(line)
            if skipping:
                lines.extend(replacements[name].rstrip("\n").splitlines())
        elif not skipping:
            lines.append(line)
    return "\n".join(lines) + "\n"


def gh200(text: str) -> str:
    """Derived, not recorded: the H200 output with a GH200's values in the same format."""
    for old, new in (
        ("NVIDIA H200", "NVIDIA GH200 480GB"),
        ("580.159.04", "570.148.08"),
        ("CUDA Version: 13.0", "CUDA Version: 12.8"),
        ("143771", "97871"),
    ):
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def local_probe(tmp_path_factory) -> str:
    return run_probe(tmp_path_factory.mktemp("home"))


def test_recorded_h200_parses_to_its_real_values(local_probe):
    facts = parse_facts(splice(local_probe, {"smi": H200_SMI_HEAD, "gpus": H200_GPU_CSV, "nvcc": H200_NVCC}))
    assert facts.driver == "580.159.04"
    assert facts.cuda == "13.0"
    assert facts.cuda_toolkit == "13.0"
    assert facts.gpu_error is None
    assert facts.gpu_count == 1
    (gpu,) = facts.gpus
    assert (gpu.index, gpu.name, gpu.memory_total_mib, gpu.memory_used_mib) == (0, "NVIDIA H200", 143771, 0)
    assert gpu.compute_capability == "9.0"
    assert gpu_text(facts) == "1x NVIDIA H200"
    assert gpu_memory_text(facts) == "0/143771 MiB"
    # the rest is this machine's own real output, parsed alongside
    assert facts.arch == platform.machine()
    assert facts.cpus >= 1 and facts.memory_bytes > 0 and facts.hostname


def test_busy_gpu_memory_and_compute_apps_rows_are_told_apart():
    busy = (RECORDED / "h200-nvidia-smi-busy.txt").read_text()  # GPU row, blank line, compute-app row
    gpus, driver = parse_gpu_csv(busy)
    assert driver == "580.159.04"
    assert len(gpus) == 1  # `465, python3, 776` is a process, not a GPU
    assert gpus[0].memory_used_mib == 785
    assert gpus[0].memory_free_mib == 143771 - 785


def test_derived_gh200_node(local_probe):
    arch_replaced = splice(local_probe, {"arch": "aarch64"})
    facts = parse_facts(splice(arch_replaced, {"smi": gh200(H200_SMI_HEAD), "gpus": gh200(H200_GPU_CSV)}))
    assert facts.arch == "aarch64"
    assert facts.driver == "570.148.08"
    assert facts.cuda == "12.8"
    assert facts.gpu_name == "NVIDIA GH200 480GB"
    assert facts.gpus[0].memory_total_mib == 97871
    assert facts.gpus[0].compute_capability == "9.0"
    variables = {"facts": facts.as_dict()}
    # the checks a GH200 playbook makes compare versions, not text ("570.148.08" < "580" as text too,
    # but "570.148.8" vs "570.148.08" would not)
    assert evaluate("facts.driver is version('>=', '570.148.08')", variables) is True
    assert evaluate("facts.driver is version('>=', '570.148.9')", variables) is False
    assert evaluate("facts.cuda is version('==', '12.8')", variables) is True


def test_host_without_gpu_is_no_gpu_not_an_error(local_probe):
    assert (
        "nvidia-smi" not in subprocess.run(["sh", "-c", "command -v nvidia-smi"], capture_output=True, text=True).stdout
    )
    facts = parse_facts(local_probe)
    assert facts.gpus == () and facts.driver is None and facts.cuda is None and facts.gpu_error is None
    assert gpu_text(facts) == "no GPU"
    assert gpu_memory_text(facts) == "-"


def test_driver_that_does_not_answer_is_reported_not_raised(local_probe):
    # Derived: nvidia-smi's own message when its kernel module is not loaded, in place of the table.
    failed = (
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
        "Make sure that the latest NVIDIA driver is installed and running.\n"
    )
    facts = parse_facts(splice(local_probe, {"smi": failed, "gpus": failed}))
    assert facts.gpus == () and facts.driver is None
    assert facts.gpu_error.startswith("NVIDIA-SMI has failed")
    assert gpu_text(facts).startswith("no GPU (NVIDIA-SMI has failed")


def test_recorded_os_release_and_sections():
    osr = parse_os_release(REC["cat /etc/os-release"])
    assert (osr["ID"], osr["VERSION_ID"], osr["PRETTY_NAME"]) == ("ubuntu", "24.04", "Ubuntu 24.04.3 LTS")
    assert sections("@@a\n1\n2\n@@b\n\n@@c\nx\n") == {"a": "1\n2", "b": "", "c": "x"}


def test_custom_facts_from_facts_d(tmp_path):
    facts_d = tmp_path / ".fleet" / "facts.d"
    facts_d.mkdir(parents=True)
    (facts_d / "stack.json").write_text('{\n  "torch": "2.8.0",\n  "torch_cuda": "12.8"\n}\n')  # multi-line JSON
    (facts_d / "broken.json").write_text("{not json")
    (facts_d / "last.json").write_text('{"path": "C:\\\\x", "pad": "  two  spaces"}')  # no newline at the end
    facts = parse_facts(run_probe(tmp_path))
    assert facts.stack == {"torch": "2.8.0", "torch_cuda": "12.8"}
    assert facts.custom["broken"] == {"error": "unreadable JSON"}
    assert facts.custom["last"] == {"path": "C:\\x", "pad": "  two  spaces"}
    # The system group is read with the shell's own `read`, its output collected and written once.
    uname = os.uname()
    assert (facts.hostname, facts.arch, facts.kernel) == (uname.nodename, uname.machine, uname.release)
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    assert facts.memory_bytes == mem_kib * 1024
    assert facts.os_id == platform.freedesktop_os_release()["ID"]


@pytest.mark.parametrize("as_json", [False, True])
def test_fleet_facts_on_the_local_inventory(as_json):
    result = run_fleet("facts", "-i", "inventories/local", *(["--json"] if as_json else []))
    assert result.returncode == 0, result.stderr
    if as_json:
        local = by_host(result.stdout)["localhost"]
        assert local["arch"] == platform.machine() and local["gpus"] == [] and local["driver"] is None
    else:
        (row,) = [line for line in result.stdout.splitlines() if line.strip().startswith("localhost")]
        assert platform.machine() in row and "no GPU" in row
