"""GPU health parsing and judging against real output.

The healthy case is tests/recorded/h200-health.txt exactly as recorded on our H200 (driver
580.159.04). Every sick case is DERIVED from that same recorded output by changing values in its
real format (fakegpu.sick changes columns of the recorded CSV row; Xid lines are the recorded
NVRM kernel-log line format with an Xid message in it): no sick GPU was recorded.
"""

from __future__ import annotations

import subprocess

import pytest
from fakegpu import H200_HEALTH_CSV, H200_NVRM_LINES, HEALTH_QUERY, HEALTH_REC, sick

from fleet.facts import PROBE, parse_facts, sections
from fleet.health import (
    HostHealth,
    baseline,
    errors,
    expected_gpus,
    judge,
    parse_gpu_health,
    parse_health,
    parse_xids,
    summary,
    turned_sick,
)

UNCORRECTED = "ecc.errors.uncorrected.volatile.total"


def health_of(csv_text: str, kernel_log: str = H200_NVRM_LINES) -> HostHealth:
    """What the facts command's health sections would hold on the recorded machine."""
    text = f"@@health_smi\n/usr/bin/nvidia-smi\n@@health_gpus\n{csv_text}@@health_xid\nsource dmesg\n"
    text += "".join(line + "\n" for line in kernel_log.splitlines() if "NVRM: Xid" in line)  # the probe's grep
    health = parse_health(sections(text))
    assert health is not None
    return health


def xid_line(code: int, message: str, pci: str = "0000:00:06") -> str:
    """Derived: a kernel-log line in the recorded dmesg format, with an Xid message."""
    return f"[ 8123.456789] NVRM: Xid (PCI:{pci}): {code}, pid=4242, name=python3, {message}"


def test_recorded_query_is_the_one_the_probe_runs():
    assert f"nvidia-smi {HEALTH_QUERY}" in HEALTH_REC
    assert f"nvidia-smi {HEALTH_QUERY} 2>&1" in PROBE


def test_recorded_h200_is_healthy_with_every_field_read():
    (gpu,), problems = parse_gpu_health(H200_HEALTH_CSV)
    assert problems == ()
    assert (gpu.index, gpu.name, gpu.uuid) == (0, "NVIDIA H200", "GPU-046f42ef-9823-a337-bf38-d3742682dcc6")
    assert gpu.pci_bus_id == "00000000:00:06.0"
    assert (gpu.temperature_c, gpu.power_draw_w, gpu.power_limit_w) == (37, 79.46, 700.0)
    assert (gpu.sm_clock_mhz, gpu.sm_clock_max_mhz) == (345, 1980)
    assert (gpu.clock_event_reasons, gpu.clock_events) == (1, ("idle",))
    assert (gpu.ecc_mode, gpu.ecc_corrected_volatile, gpu.ecc_uncorrected_volatile) == ("Enabled", 0, 0)
    assert gpu.ecc_uncorrected_aggregate == 0
    assert (gpu.retired_pages_pending, gpu.remap_pending, gpu.remap_failure) == (None, False, False)  # [N/A]
    assert (gpu.persistence_mode, gpu.compute_mode, gpu.mig_mode) == ("Enabled", "Default", "Disabled")
    assert (gpu.fan_speed_pct, gpu.pstate) == (None, "P0")
    health = health_of(H200_HEALTH_CSV)
    assert health.xid_source == "dmesg" and health.xids == ()  # the recorded log has NVRM lines, no Xid
    assert judge(health, expected_gpus=1) == [] and summary([]) == "ok"


@pytest.mark.parametrize(
    ("changes", "problem_id", "text"),
    [
        ({UNCORRECTED: "2"}, "ecc-uncorrectable", "GPU0: 2 uncorrectable ECC (volatile)"),
        ({"remapped_rows.pending": "Yes"}, "remap-pending", "GPU0: row remap pending (needs a GPU reset)"),
        ({"remapped_rows.failure": "Yes"}, "remap-failure", "GPU0: row remapping failed"),
        ({"retired_pages.pending": "Yes"}, "retire-pending", "GPU0: page retirement pending (needs a GPU reset)"),
        (
            {"clocks_event_reasons.active": "0x0000000000000048", "temperature.gpu": "91"},
            "hw-slowdown",
            "GPU0: clocks held down by HW slowdown, HW thermal slowdown (91 C, 79.46 W)",
        ),
        (
            {"clocks_event_reasons.active": "0x0000000000000088"},
            "hw-slowdown",
            "GPU0: clocks held down by HW slowdown, HW power brake slowdown (37 C, 79.46 W)",
        ),
        ({"mig.mode.current": "Enabled"}, "mig-on", "GPU0: MIG mode is on"),
        (
            {"compute_mode": "Exclusive_Process"},
            "compute-mode",
            "GPU0: compute mode Exclusive_Process (the trainer and vLLM share a GPU)",
        ),
    ],
)
def test_derived_sick_gpu_is_unfit(changes, problem_id, text):
    problems = judge(health_of(sick(H200_HEALTH_CSV, **changes)))
    assert [(p.id, p.text, p.severity) for p in problems] == [(problem_id, text, "error")]
    assert summary(problems) == text
    assert problems[0].remedy and problems[0].gpu == 0


def test_remedies_say_how_to_drain_reset_or_file_a_ticket():
    (ecc,) = judge(health_of(sick(H200_HEALTH_CSV, **{UNCORRECTED: "2"})))
    assert "scontrol update nodename=<node> state=drain" in ecc.remedy and "nvidia-smi -r -i 0" in ecc.remedy
    (failed,) = judge(health_of(sick(H200_HEALTH_CSV, **{"remapped_rows.failure": "Yes"})))
    assert failed.remedy.startswith("open a hardware ticket (RMA)") and "nvidia-smi -q -i 0" in failed.remedy
    (mig,) = judge(health_of(sick(H200_HEALTH_CSV, **{"mig.mode.current": "Enabled"})))
    assert "nvidia-smi -i 0 -mig 0" in mig.remedy


def test_safe_settings_are_warnings_with_a_fix_through_the_judged_nvidia_smi():
    health = health_of(sick(H200_HEALTH_CSV, persistence_mode="Disabled", compute_mode="Exclusive_Process"))
    problems = judge(health)
    by_id = {p.id: p for p in problems}
    assert by_id["compute-mode"].fix == ("/usr/bin/nvidia-smi", "-i", "0", "-c", "DEFAULT")
    assert by_id["persistence-off"].fix == ("/usr/bin/nvidia-smi", "-i", "0", "-pm", "1")
    assert by_id["persistence-off"].severity == "warning"  # fit to train on, worth fixing
    assert [p.id for p in errors(problems)] == ["compute-mode"]
    only_warning = judge(health_of(sick(H200_HEALTH_CSV, persistence_mode="Disabled")))
    assert errors(only_warning) == [] and summary(only_warning) == "ok (1 warning(s))"


def test_two_problems_on_one_gpu_show_the_first_and_a_count():
    problems = judge(health_of(sick(H200_HEALTH_CSV, **{UNCORRECTED: "2", "remapped_rows.pending": "Yes"})))
    assert summary(problems) == "GPU0: 2 uncorrectable ECC (volatile) (+1 more)"


@pytest.mark.parametrize(
    ("code", "message", "meaning", "severity"),
    [
        (48, "An uncorrectable double bit error (DBE) has been detected", "double-bit ECC error", "error"),
        (63, "Row Remapper: New row marked for remapping", "row remap or page retirement recorded", "warning"),
        (64, "Row Remapper: Failed to remap row", "row remap or page retirement recording failure", "error"),
        (74, "NVLink: fatal error detected on link 3", "NVLink error", "error"),
        (79, "GPU has fallen off the bus.", "GPU has fallen off the bus", "error"),
        (94, "Contained: SM (0x1). RST: No, D-RST: No", "contained ECC error", "warning"),
        (95, "Uncontained: FBHUB. RST: Yes, D-RST: No", "uncontained ECC error", "error"),
        (13, "Graphics SM Warp Exception on (GPC 0, TPC 0, SM 0)", "graphics engine exception", "warning"),
    ],
)  # fmt: skip
def test_derived_xid_lines_map_to_the_gpu_and_their_meaning(code, message, meaning, severity):
    log = H200_NVRM_LINES + xid_line(code, message) + "\n"
    health = health_of(H200_HEALTH_CSV, log)
    (xid,) = health.xids
    assert (xid.code, xid.gpu, xid.pci) == (code, 0, "0000:00:06")  # PCI 0000:00:06 is 00000000:00:06.0
    (problem,) = judge(health)
    assert problem.id == f"xid-{code}" and problem.severity == severity
    assert problem.text == f"GPU0: Xid {code} ({meaning}) in the kernel log"


def test_xid_of_an_unknown_gpu_and_code_and_the_journal_format():
    lines = [
        "Dec 01 22:27:12 h200 kernel: NVRM: Xid (PCI:0000:3b:00): 999, pid=1, name=x, something new",
        "[  12.5] NVRM: Xid (0000:00:06): 31, Ch 0000000b, engmask 00000120",  # older drivers: no `PCI:`
        "[  13.0] NVRM: loading NVIDIA UNIX Open Kernel Module",
    ]
    gpus, _ = parse_gpu_health(H200_HEALTH_CSV)
    unknown, fault = parse_xids(lines, gpus)
    assert (unknown.code, unknown.gpu, unknown.detail) == (999, None, "pid=1, name=x, something new")
    assert (fault.code, fault.gpu) == (31, 0)
    texts = [p.text for p in judge(HostHealth("/usr/bin/nvidia-smi", gpus, (), "journal", (unknown, fault)))]
    assert texts == [
        "GPU0: Xid 31 (GPU memory page fault) in the kernel log",
        "PCI 0000:3b:00: Xid 999 (see NVIDIA's Xid catalog) in the kernel log",
    ]


def test_an_unreadable_kernel_log_is_a_warning_not_a_failure():
    gpus, _ = parse_gpu_health(H200_HEALTH_CSV)
    text = "@@health_smi\n/usr/bin/nvidia-smi\n@@health_gpus\n" + H200_HEALTH_CSV + "@@health_xid\nsource none\n"
    health = parse_health(sections(text))
    assert health == HostHealth("/usr/bin/nvidia-smi", gpus, (), "none", ())
    (unread,) = judge(health)
    assert (unread.id, unread.severity) == ("kernel-log-unreadable", "warning") and errors([unread]) == []


def test_missing_gpu_against_the_inventory():
    health = health_of(H200_HEALTH_CSV)
    (missing,) = judge(health, expected_gpus=8)
    assert missing.text == "1 of 8 GPUs found (seen: GPU0)" and missing.severity == "error"
    assert judge(health, expected_gpus=1) == [] and judge(health) == []
    (none,) = judge(None, expected_gpus=2, gpu_error="NVIDIA-SMI has failed")
    assert none.text == "0 of 2 GPUs found (seen: none) (NVIDIA-SMI has failed)"
    assert expected_gpus({"expected_gpus": 8}) == 8 and expected_gpus({}) is None
    with pytest.raises(ValueError, match="whole number"):
        expected_gpus({"expected_gpus": "eight"})


def test_nvidia_smi_errors_instead_of_rows_are_problems():
    # Derived: nvidia-smi's message for a GPU it cannot reach, in place of the recorded GPU row.
    header = H200_HEALTH_CSV.splitlines()[0]
    lost = f"{header}\nUnable to determine the device handle for GPU0000:00:06.0: Unknown Error\n"
    health = health_of(lost)
    assert health.gpus == ()
    assert health.errors == ("Unable to determine the device handle for GPU0000:00:06.0: Unknown Error",)
    (problem,) = judge(health)
    assert problem.id == "smi-error" and problem.severity == "error"
    # and a driver that does not know a field (older than the recorded one) says so, not "healthy"
    old = 'Field "clocks_event_reasons.active" is not a valid field to query.\n'
    assert [p.id for p in judge(health_of(old))] == ["smi-error"]
    # and one that hangs (a GPU off the bus) is cut off by the probe's `timeout`, which says so
    hung = "nvidia-smi did not answer within 20 s\n"
    assert [p.text for p in judge(health_of(hung))] == ["nvidia-smi: nvidia-smi did not answer within 20 s"]


def test_host_without_nvidia_has_no_health_to_judge(tmp_path):
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["sh"], input=PROBE, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0
    facts = parse_facts(done.stdout)  # this machine: no nvidia-smi, no NVIDIA driver
    assert facts.health is None and judge(facts.health) == []
    assert facts.as_dict()["health"] is None


def test_turned_sick_since_the_launch():
    healthy = health_of(H200_HEALTH_CSV)
    base = baseline(healthy)
    assert base == {"ecc": {"GPU-046f42ef-9823-a337-bf38-d3742682dcc6": [0, 0]}, "last_xid": None}
    assert turned_sick(base, healthy) == []
    later = health_of(
        sick(H200_HEALTH_CSV, **{UNCORRECTED: "3"}), H200_NVRM_LINES + xid_line(95, "Uncontained: FBHUB.") + "\n"
    )
    assert turned_sick(base, later) == [
        "GPU0: uncorrectable ECC 0 -> 3 since the launch",
        "GPU0: Xid 95 (uncontained ECC error) since the launch",
    ]
    # an Xid already in the log at launch is not news; one after it is
    old = H200_NVRM_LINES + xid_line(13, "Graphics SM Warp Exception") + "\n"
    base = baseline(health_of(H200_HEALTH_CSV, old))
    assert turned_sick(base, health_of(H200_HEALTH_CSV, old)) == []
    newer = old + xid_line(79, "GPU has fallen off the bus.").replace("8123", "9000") + "\n"
    assert turned_sick(base, health_of(H200_HEALTH_CSV, newer)) == [
        "GPU0: Xid 79 (GPU has fallen off the bus) since the launch"
    ]
    assert turned_sick({}, health_of(H200_HEALTH_CSV, newer)) == []  # a run launched before fleet knew health
