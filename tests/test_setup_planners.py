"""The setup tasks' planners, pure: probe output in, plan out (no host needed).

The probe outputs here are in the exact formats the probes print; the sshd tests
(test_setup_ssh.py) run the same probes for real."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from fleet.doctor import FIXES, Diagnosis, diagnose, exit_code, fix_playbook, setup_play
from fleet.facts import Facts, with_overrides
from fleet.model import CommandResult, FleetError, Plan
from fleet.playbook import load_playbook
from fleet.task import Context, build
from fleet.tasks.files import FileState
from fleet.tasks.pip import parse_wanted, satisfied, to_install
from fleet.tasks.profile import export_line
from fleet.tasks.stack import choose_attention
from fleet.tasks.uv import python_matches
from fleet.templating import TemplateError, with_defaults

REPO = Path(__file__).resolve().parent.parent
SETUP = REPO / "playbooks" / "setup.yaml"
CTX = Context("h1")
CHECK = Context("h1", check=True)


def out(stdout: str, exited: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult(stdout, stderr, exited)


def plan_from(task, result: CommandResult, ctx: Context) -> Plan:
    """The task's plan from its probe's output (parsed by the probe's own parser)."""
    return task.plan(task.probe().parse(result), ctx)


def pip_probe(installed: dict[str, str], machine: str = "aarch64") -> CommandResult:
    env = {"platform_machine": machine, "python_version": "3.12", "sys_platform": "linux", "os_name": "posix"}
    return out(json.dumps({"installed": installed, "env": env}) + "\n")


# ---- pip: requirement logic ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("requirement", "have", "ok"),
    [
        ("torch", "2.9.0.dev20250901+cu128", True),  # nightly, bare name
        ("torch>=2.8", "2.9.0.dev20250901+cu128", True),  # an installed pre-release counts (as uv/pip)
        ("torch==2.8.0", "2.8.0+cu128", True),  # local label: ==2.8.0 accepts +cu128
        ("torch==2.8.0+cu128", "2.8.0", False),  # ... but not the other way round
        ("torch==2.8.0+cu128", "2.8.0+cu126", False),
        ("vllm==0.10.2", "0.10.2", True),
        ("vllm==0.10.2", "0.10.1", False),
        ("transformers>=4.57.1", "4.56.0", False),
        ("trl==0.23.1", None, False),
        ("Huggingface_Hub>=0.25", "0.35.3", True),
    ],
)
def test_satisfied_like_uv(requirement, have, ok):
    assert satisfied(parse_wanted(requirement), have) is ok


def test_wheel_files_and_urls_are_satisfied_by_their_name_and_version():
    wheel = parse_wanted("~/w/flash_attn_3-3.0.0b1-cp312-abi3-linux_aarch64.whl")
    assert wheel.name == "flash-attn-3" and wheel.is_path
    assert satisfied(wheel, "3.0.0b1") and not satisfied(wheel, "3.0.0")
    url = parse_wanted("demo @ https://example.invalid/demo-1.2-py3-none-any.whl")
    assert url.name == "demo" and satisfied(url, "1.2") and not satisfied(url, "1.1")


@pytest.mark.parametrize(
    "bad",
    ["flash_attn_3.whl", "flash_attn_3-3.0.0b1-cp312-abi3-linux_aarch64-2.8.0-12.8.whl"],
)
def test_guide_wheel_names_that_uv_refuses_are_refused_with_the_fix(bad):
    # uv: "The wheel filename `flash_attn_3.whl` is invalid: Must have a version"
    with pytest.raises(FleetError, match=r"not a valid wheel file name.*NAME-VERSION"):
        parse_wanted(bad)


def test_unknown_sources_and_bad_specifiers_are_one_line_errors():
    with pytest.raises(FleetError, match="cannot tell which distribution"):
        parse_wanted("./some/folder")
    with pytest.raises(FleetError, match="not a requirement specifier"):
        parse_wanted("torch>>2")


def test_markers_are_evaluated_on_the_host():
    wanted = [parse_wanted('triton>=3.4; platform_machine == "x86_64"')]
    assert to_install(wanted, {}, {"platform_machine": "aarch64", "python_version": "3.12"}) == []
    assert [w.name for w, _ in to_install(wanted, {}, {"platform_machine": "x86_64", "python_version": "3.12"})] == [
        "triton"
    ]


def pip_plan(args: dict, probe: CommandResult, ctx: Context = CTX):
    return plan_from(build("pip", {"venv": "~/p/.venv", **args}), probe, ctx)


# uv 0.13.9's own words (recorded from `uv pip install --dry-run` on this machine)
SATISFIED = "Using Python 3.12.3 environment at: /h/p/.venv\nChecked 2 packages in 1ms\nWould make no changes\n"
OFFLINE_MISS = "Using Python 3.12.3 environment at: /h/p/.venv\nerror: Distribution not found (offline)\n"


def uv_probe(installed: dict[str, str], audit: str = OFFLINE_MISS, plan: str | None = None, rc: int = 0):
    """The pip probe's output: the venv's listing, uv's offline check, and (if asked) uv's plan."""
    text = "@@venv\n" + pip_probe(installed).stdout + f"@@audit\n{audit}@@audit-rc {0 if plan is None else 2}\n"
    if plan is not None:
        text += f"@@uv-plan\n{plan}@@uv-plan-rc {rc}\n"
    return out(text)


VLLM_PLAN = """Using Python 3.12.3 environment at: /h/p/.venv
Resolved 171 packages in 1.21s
Would download 3 packages
Would uninstall 2 packages
Would install 4 packages
 + aiohttp==3.14.5
 - numpy==2.4.6
 + numpy==2.2.6
 - torch==2.9.0.dev20250901+cu128
 + torch==2.8.0
 + vllm==0.10.2
"""


def test_pip_plan_is_uvs_own_and_shows_every_collateral_change():
    plan = pip_plan(
        {"packages": ["vllm==0.10.2"], "extra_index_url": "https://wheels.vllm.ai/0.10.2/"},
        uv_probe({"numpy": "2.4.6", "torch": "2.9.0.dev20250901+cu128"}, plan=VLLM_PLAN),
        CHECK,
    )
    assert plan.summary == (
        "install vllm==0.10.2 (missing) with --extra-index-url https://wheels.vllm.ai/0.10.2/; uv: "
        "2 new (aiohttp 3.14.5, vllm 0.10.2); "
        "2 downgrades (numpy 2.4.6 -> 2.2.6, torch 2.9.0.dev20250901+cu128 -> 2.8.0)"
    )
    assert "~ torch 2.9.0.dev20250901+cu128 -> 2.8.0 (downgrade)\n" in plan.diff and "+ aiohttp 3.14.5\n" in plan.diff
    assert plan.data["downgraded"]["torch"] == ["2.9.0.dev20250901+cu128", "2.8.0"]
    py = '"$HOME"/p/.venv/bin/python3'
    assert plan.script.endswith(
        f"uv pip install --python {py} --extra-index-url https://wheels.vllm.ai/0.10.2/ vllm==0.10.2\n"
    )


def test_pip_satisfied_by_uvs_offline_check_is_ok_not_changed():
    plan = pip_plan(
        {
            "packages": ["torch", "torchvision"],
            "pre": True,
            "index_url": "https://download.pytorch.org/whl/nightly/cu128",
        },
        uv_probe({"torch": "2.9.0.dev20250901+cu128", "torchvision": "0.24.0.dev20250901+cu128"}, audit=SATISFIED),
    )
    assert not plan.changes and plan.summary.startswith("satisfied: torch 2.9.0.dev20250901+cu128")
    probe = build("pip", {"venv": "~/p/.venv", "packages": ["torch"], "upgrade": True}).probe().script
    offline = next(line for line in probe.splitlines() if "--offline" in line)
    assert "--upgrade" not in offline and "--dry-run" in offline  # the check never asks an index


def test_pip_uv_failure_fails_the_run_and_is_shown_in_check():
    said = "error: No solution found when resolving dependencies\n  cause: Because demo-x was not found\n"
    probe = uv_probe({}, plan=said, rc=1)
    assert pip_plan({"packages": ["demo-x"]}, probe).fail == (
        "uv cannot install demo-x (missing): error: No solution found when resolving dependencies "
        "cause: Because demo-x was not found"
    )
    assert "uv cannot plan it now" in pip_plan({"packages": ["demo-x"]}, probe, CHECK).summary


def test_pip_options_and_lock_reach_uv_quoted(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("# a lock\ntransformers==4.57.6\npeft==0.21.2 ; python_version >= '3.9'\n")
    task = build(
        "pip",
        {
            "venv": "~/p/.venv",
            "packages": ["vllm==0.10.2"],
            "extra_index_url": "https://wheels.vllm.ai/0.10.2/",
            "config_settings": {"vllm:torch-backend": "auto"},
            "pre": True,
            "upgrade": True,
            "index_url": "",  # an empty template value means "not given"
            "find_links": ["", "/srv/wheels"],
            "lock": str(lock),
            "pins": ["peft==0.17.1", "numpy<2.3"],
            "env": {"SSL_CERT_FILE": "/etc/lab ca.pem"},
        },
    )
    assert task.constraints == "transformers==4.57.6\npeft==0.17.1\nnumpy<2.3\n"
    plan = plan_from(task, uv_probe({}, plan=" + vllm==0.10.2\n"), CTX)
    assert (
        "--pre --upgrade --extra-index-url https://wheels.vllm.ai/0.10.2/ --find-links /srv/wheels "
        '--config-settings vllm:torch-backend=auto -c "$c" vllm==0.10.2\n' in plan.script
    )
    assert (
        plan.script.startswith("export SSL_CERT_FILE='/etc/lab ca.pem'\n") and "constraints (3 lines)" in plan.summary
    )
    assert "export SSL_CERT_FILE='/etc/lab ca.pem'\n" in task.probe().script
    with pytest.raises(FleetError, match="cannot read it"):
        build("pip", {"venv": "v", "packages": ["x"], "lock": str(tmp_path / "nope.txt")}).probe()
    with pytest.raises(FleetError, match="not an environment variable name"):
        build("pip", {"venv": "v", "packages": ["x"], "env": {"A B": "1"}})


def test_pip_never_shows_index_credentials():
    plan = pip_plan(
        {"packages": ["x"], "index_url": "https://bot:s3cret@pypi.example.invalid/simple"},
        uv_probe({}, plan=" + x==1.0\n"),
    )
    assert "s3cret" not in plan.summary + plan.diff and "https://***@pypi.example.invalid/simple" in plan.summary
    assert "https://bot:s3cret@pypi.example.invalid/simple" in plan.script  # uv still gets them


def test_pip_local_wheel_keeps_home_and_uninstall():
    links = pip_plan(
        {"packages": ["torch==2.8.0"], "find_links": "~/src/dist", "no_index": True},
        uv_probe({}, plan=" + torch==2.8.0\n"),
    )
    assert '--find-links "$HOME"/src/dist --no-index torch==2.8.0' in links.script  # `~/` reaches uv as home
    assert links.summary.startswith("install torch==2.8.0 (missing) with --find-links ~/src/dist --no-index; uv: 1 new")
    plan = pip_plan(
        {"packages": ["~/w/demo_f-1.0-py3-none-any.whl"]},
        uv_probe({}, plan=" + demo-f==1.0 (from file:///h/w/demo_f-1.0-py3-none-any.whl)\n"),
    )
    assert '"$HOME"/w/demo_f-1.0-py3-none-any.whl\n' in plan.script and "demo-f==1.0 (missing)" in plan.summary
    gone = pip_plan(
        {"packages": ["vllm", "absent-one"], "state": "absent"}, out("@@venv\n" + pip_probe({"vllm": "0.10.2"}).stdout)
    )
    assert gone.script.endswith('uv pip uninstall --python "$HOME"/p/.venv/bin/python3 vllm\n')
    assert gone.summary == "uninstall vllm 0.10.2"


def test_pip_without_venv_or_uv_fails_but_check_mode_plans_from_metadata():
    missing = out("@@venv\nmissing\n")
    assert "create it first" in pip_plan({"packages": ["torch"]}, missing).fail
    assert pip_plan({"packages": ["torch"]}, missing, CHECK).summary == (
        "install torch (missing) (planned from metadata: ~/p/.venv does not exist yet)"
    )
    no_uv = out("@@venv\n" + pip_probe({"torch": "2.8.0"}).stdout + "@@no-uv\n")
    assert "install it first" in pip_plan({"packages": ["torch"]}, no_uv).fail
    assert not pip_plan({"packages": ["torch"]}, no_uv, CHECK).changes


# ---- uv / venv -------------------------------------------------------------------------------------
def test_uv_is_installed_when_missing_or_not_the_pinned_version():
    uv = build("uv", {"version": "0.13.9"})
    in_dir = plan_from(uv, out("@@path\n@@dir\nuv 0.13.9 (abc 2025-11-01)\n"), CTX)
    assert not in_dir.changes and in_dir.data["path"] == "~/.local/bin/uv"
    upgrade = plan_from(uv, out("@@path\n@@dir\nuv 0.4.0\n"), CTX)
    assert upgrade.summary == "upgrade uv 0.4.0 to 0.13.9 into ~/.local/bin from https://astral.sh/uv/0.13.9/install.sh"
    fresh = plan_from(build("uv", {}), out("@@path\n@@dir\n"), CTX)
    assert "https://astral.sh/uv/install.sh" in fresh.script and 'UV_INSTALL_DIR="$HOME"/.local/bin' in fresh.script
    assert "UV_NO_MODIFY_PATH=1" in fresh.script and "| sh" not in fresh.script  # a failed fetch must fail
    assert not plan_from(build("uv", {"version": ""}), out("@@path\n@@dir\nuv 0.5.1\n"), CTX).changes


def test_a_uv_on_path_at_the_wanted_version_is_used():
    on_path = "@@path\n/opt/tools/uv\nuv 0.13.9 (x86_64-unknown-linux-gnu)\n@@dir\n"
    used = plan_from(build("uv", {"version": "0.13.9"}), out(on_path), CTX)
    assert not used.changes and used.data["path"] == "/opt/tools/uv"
    assert used.summary == "uv 0.13.9 at /opt/tools/uv (on PATH)"
    other = plan_from(
        build("uv", {"version": "0.14.0", "env": {"HTTPS_PROXY": "http://proxy:3128"}}), out(on_path), CTX
    )
    assert other.summary.startswith("install uv 0.14.0 (the uv on PATH is 0.13.9) into ~/.local/bin")
    assert other.script.startswith("export HTTPS_PROXY=http://proxy:3128\n") and other.data["path"] == "~/.local/bin/uv"
    any_uv = plan_from(build("uv", {}), out(on_path), CTX)
    assert not any_uv.changes and any_uv.data["path"] == "/opt/tools/uv"
    venv = build("venv", {"path": "~/p/.venv", "uv": "/opt/tools/uv", "env": {"UV_CACHE_DIR": "/c"}})
    assert (
        plan_from(venv, out("absent\n"), CTX).script
        == 'export UV_CACHE_DIR=/c\n/opt/tools/uv venv --python 3.12 "$HOME"/p/.venv\n'
    )


def test_venv_create_keep_and_refuse_to_wipe():
    venv = build("venv", {"path": "~/p/.venv", "python": 3.12})  # YAML's number 3.12 is taken as "3.12"
    create = plan_from(venv, out("absent\n"), CTX)
    assert create.script.endswith('uv venv --python 3.12 "$HOME"/p/.venv\n')
    assert not plan_from(venv, out("venv\n3.12.11\ninclude-system-site-packages = false\n"), CTX).changes
    wrong = plan_from(venv, out("venv\n3.11.2\ninclude-system-site-packages = false\n"), CTX)
    assert wrong.fail.startswith("venv ~/p/.venv has Python 3.11.2, not 3.12; remove it")
    flip = plan_from(
        build("venv", {"path": "/v", "system_site_packages": True}),
        out("venv\n3.12.1\ninclude-system-site-packages = false\n"),
        CTX,
    )
    assert "include-system-site-packages = true" in flip.script
    assert python_matches("3.12.1", "3.12") and not python_matches("3.1.2", "3.12")


# ---- download --------------------------------------------------------------------------------------
def test_download_plans():
    sha = "a" * 64
    task = build("download", {"url": "https://x.invalid/f.whl", "dest": "~/w/f.whl", "sha256": sha})
    assert not plan_from(task, out(f"file\n{sha}\n"), CTX).changes
    again = plan_from(task, out(f"file\n{'b' * 64}\n"), CTX)
    assert again.summary.endswith(f"(sha256 differs (have {'b' * 64}, want {sha}))")
    assert f'if [ "$got" != {sha} ]' in again.script and 'mv -f -- "$t" "$HOME"/w/f.whl' in again.script
    no_sum = build("download", {"url": "https://x.invalid/f", "dest": "/f", "sha256": ""})
    assert not plan_from(no_sum, out("file\n"), CTX).changes and "sha256sum" not in no_sum.probe().script
    with pytest.raises(FleetError, match="64 hex digits"):
        plan_from(build("download", {"url": "u", "dest": "/f", "sha256": "abc"}), out("absent\n"), CTX)


# ---- python check ----------------------------------------------------------------------------------
def test_python_check_fails_with_the_snippets_message():
    check = build("python", {"venv": "~/p/.venv", "code": "import torch"})
    err = "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'torch'\n"
    failed = out("\n@@fleet-snippet-exit 1\n", stderr=err)  # the probe exits 0; the snippet's status comes last
    assert plan_from(check, failed, CTX).fail == "ModuleNotFoundError: No module named 'torch'"
    assert plan_from(check, failed, CTX).data == {
        "rc": 1, "stdout": "", "stderr": err.rstrip("\n"), "stdout_lines": [], "stderr_lines": err.splitlines()
    }  # fmt: skip
    in_check = plan_from(check, failed, CHECK)
    assert in_check.always_runs and "fails now: ModuleNotFoundError" in in_check.summary
    ok = plan_from(check, out("Torch: 2.9.0 | CUDA: 12.8 | GPU: NVIDIA GH200 480GB\n\n@@fleet-snippet-exit 0\n"), CTX)
    assert ok.summary.endswith("NVIDIA GH200 480GB") and not ok.changes
    with pytest.raises(FleetError, match="printed no exit status"):
        plan_from(check, out("Torch: 2.9.0\n"), CTX)


def test_python_check_probe_prints_the_golden_format():
    check = build("python", {"venv": "/usr", "code": "import sys; print('out'); sys.exit('no torch here')"})
    ran = subprocess.run(["sh", "-c", check.probe().script], capture_output=True, text=True)
    assert ran.returncode == 0  # the probe could look; what it saw is the snippet's status
    assert ran.stdout == "out\n\n@@fleet-snippet-exit 1\n" and ran.stderr == "no torch here\n"
    missing = build("python", {"venv": "/nonexistent", "code": "pass"}).probe()
    seen = missing.parse(CommandResult(*_sh(missing.script)))
    assert seen.exited == 127 and "no Python at /nonexistent/bin/python3" in seen.stderr


def _sh(script: str) -> tuple[str, str, int]:
    ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    return ran.stdout, ran.stderr, ran.returncode


# ---- profile ---------------------------------------------------------------------------------------
def test_profile_lines_survive_being_sourced_twice(tmp_path):
    env = tmp_path / "env.sh"
    env.write_text(
        export_line("LD_LIBRARY_PATH", None, "~/p/.venv/lib/python3.12/site-packages/torch/lib", None)
        + "\n"
        + export_line("ATTN_IMPL", "flash_attention_2", None, None)
        + "\n"
        + export_line("WITH_SPACE", "a b'c", None, None)
        + "\n"
    )
    shown = subprocess.run(
        ["sh", "-c", '. "$1"; . "$1"; printf "%s|%s|%s" "$LD_LIBRARY_PATH" "$ATTN_IMPL" "$WITH_SPACE"', "sh", env],
        env={"HOME": "/home/u", "LD_LIBRARY_PATH": "/usr/lib", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown == "/home/u/p/.venv/lib/python3.12/site-packages/torch/lib:/usr/lib|flash_attention_2|a b'c"


def test_profile_plan_edits_only_its_own_line():
    task = build("profile", {"name": "ATTN_IMPL", "value": "sdpa"})
    old_line = export_line("ATTN_IMPL", "flash_attention_3", None, None)
    other = export_line("PATH", None, "~/.local/bin", None)
    body = f"{other}\n{old_line}\n".encode()
    env_state = f"file\n644\n{hashlib.sha256(body).hexdigest()}\n{base64.b64encode(body).decode()}\n"
    bashrc = b"# mine\n"
    rc_state = f"file\n644\n{hashlib.sha256(bashrc).hexdigest()}\n{base64.b64encode(bashrc).decode()}\n"
    plan = plan_from(task, out(f"{env_state}@@fleet-next-file\n{rc_state}"), CTX)
    assert [u.path for u in plan.uploads] == ["~/.fleet/env.sh", "~/.bashrc"]
    assert plan.uploads[0].content.decode() == f"{other}\nexport ATTN_IMPL=sdpa # fleet: ATTN_IMPL\n"
    assert plan.uploads[1].content.decode().startswith('# mine\n[ -f "$HOME"/.fleet/env.sh ]')
    empty = f"file\n644\n{hashlib.sha256(b'').hexdigest()}\n\n"  # an empty ~/.bashrc is not "too large"
    fresh = plan_from(task, out(f"absent\n@@fleet-next-file\n{empty}"), CTX)
    assert fresh.uploads[1].content.decode() == '[ -f "$HOME"/.fleet/env.sh ] && . "$HOME"/.fleet/env.sh # fleet: env\n'
    with pytest.raises(FleetError, match="exactly one of"):
        build("profile", {"name": "X", "value": "1", "prepend": "/a"}).plan([FileState("absent")] * 2, CTX)
    with pytest.raises(FleetError, match="not an environment variable name"):
        build("profile", {"name": "X-Y", "value": "1"}).plan([FileState("absent")] * 2, CTX)
    with pytest.raises(FleetError, match="printed 1 file states for 2 files"):
        plan_from(build("profile", {"name": "X", "value": "1"}), out("absent\n"), CTX)


# ---- stack -----------------------------------------------------------------------------------------
def stack_probe(seen: dict, recorded: dict | None = None) -> CommandResult:
    return out(f"@@stack\n{json.dumps(seen)}\n@@file\n{json.dumps(recorded, indent=2) if recorded else ''}\n")


def test_stack_records_the_fallback_and_says_so():
    seen = {
        "torch": "2.8.0+cu128",
        "torch_cuda": "12.8",
        "vllm": "0.10.2",
        "transformers": "4.57.1",
        "trl": "0.23.1",
        "flash_attn_3": False,
        "flash_attn_3_error": "ModuleNotFoundError: No module named 'flash_attn_3'",
        "flash_attn": True,
    }
    plan = plan_from(build("stack", {"venv": "~/p/.venv"}), stack_probe(seen), CTX)
    content = json.loads(plan.uploads[0].content)
    assert content["attn_impl"] == "flash_attention_2" and content["flash_attn_3"] is False
    assert plan.data["note"].startswith("flash_attn_3 is not usable here (ModuleNotFoundError")
    assert "trains with flash_attention_2" in plan.data["note"]
    again = plan_from(build("stack", {"venv": "~/p/.venv"}), stack_probe(seen, content), CTX)
    assert not again.changes and again.data["note"]  # unchanged, still said in the recap
    assert choose_attention({"flash_attn_3": True}, None) == ("flash_attention_3", None)
    assert choose_attention({}, None)[0] == "sdpa"
    assert choose_attention({"flash_attn_3": True}, "sdpa")[0] == "sdpa"


# ---- facts override, defaults ------------------------------------------------------------------------
def test_facts_override_replaces_fields_and_rejects_unknown_ones():
    facts = with_overrides(
        Facts(arch="x86_64"),
        {
            "arch": "aarch64",
            "cuda": 12.8,
            "gpus": [
                {
                    "index": 0,
                    "name": "NVIDIA GH200 480GB",
                    "memory_total_mib": 97871,
                    "memory_used_mib": 0,
                    "compute_capability": "9.0",
                    "memory_free_mib": 97871,
                }
            ],
        },
    )
    assert facts.arch == "aarch64" and facts.cuda == "12.8" and facts.gpu_name == "NVIDIA GH200 480GB"
    with pytest.raises(FleetError, match="unknown fact 'gpu'"):
        with_overrides(Facts(), {"gpu": 1})


def test_defaults_sit_below_inventory_vars_and_may_use_them():
    defaults = {"project_dir": "~/p", "venv": "{{ project_dir }}/.venv", "x": "{{ facts.arch }}"}
    assert with_defaults({"facts": {"arch": "aarch64"}}, defaults)["venv"] == "~/p/.venv"
    assert with_defaults({"project_dir": "/srv/q", "facts": {"arch": "a"}}, defaults)["venv"] == "/srv/q/.venv"
    lazy = with_defaults({"facts": {}}, defaults)  # rendered when used, as Ansible does
    assert lazy["venv"] == "~/p/.venv"
    with pytest.raises(TemplateError, match="variable 'x': undefined attribute"):
        lazy["x"]


# ---- the playbook and the inventory ------------------------------------------------------------------
def test_setup_playbook_loads_with_the_guides_values():
    play = load_playbook(SETUP).plays[0]
    d = play.defaults
    assert d["min_driver"] == "570.148.08" and d["cuda_version"] == "12.8" and d["python_version"] == "3.12"
    assert d["torch_nightly_index"] == "https://download.pytorch.org/whl/nightly/cu128"
    build_task = next(t for t in play.tasks if t.name == "PyTorch wheel build (Option B)")
    assert {k: build_task.environment[k] for k in ("USE_CUDA", "USE_MKLDNN")} == {"USE_CUDA": "1", "USE_MKLDNN": "0"}
    assert build_task.environment["TORCH_CUDA_ARCH_LIST"] == "{{ torch_cuda_arch_list }}"
    assert d["torch_cuda_arch_list"] == "9.0" and d["torch_version"] == "2.8.0"
    libs = next(t for t in play.tasks if t.name == "NLP / training libraries (section 4)")
    assert libs.args["no_build_isolation"] is True and libs.args["packages"] == "{{ libs_packages }}"
    assert "trl==0.23.1" in d["libs_packages"] and libs.args["lock"] == "{{ stack_lock }}"
    gpu_only = {t.name for t in play.tasks if "gpu" in t.tags}
    assert all(t.when == "require_gpu" for t in play.tasks if t.name in gpu_only) and len(gpu_only) == 6
    assert libs.environment == {"MAX_JOBS": "{{ max_jobs }}"}
    channel = {
        arch: with_defaults({"facts": {"arch": arch}, "torch_source": "auto", "playbook_dir": "p"}, d)["torch_channel"]
        for arch in ("aarch64", "x86_64")
    }
    assert channel == {"aarch64": "nightly", "x86_64": "stable"}


def test_lab_inventory_has_the_four_gh200_nodes_and_their_group_vars():
    from fleet.inventory import load_inventory

    inv = load_inventory(REPO / "inventories" / "lab")
    assert inv.select("gh200") == ["gh200-01", "gh200-02", "gh200-03", "gh200-04"]
    hv = inv.host("gh200-03").vars
    assert hv["project_dir"] == "~/tes_grpo_trl" and hv["python_version"] == "3.12"
    assert hv["torch_source"] == "auto" and hv["max_jobs"] == 8


# ---- doctor ------------------------------------------------------------------------------------------
def detect_output(seen: dict, tools: str = "") -> str:
    return f"{json.dumps(seen)}\n@@arch\naarch64\n@@tools\n{tools}\n"


VARS = {"torch_channel": "nightly", "max_jobs": 8}
LIBTORCH_ERROR = "ImportError: libtorch_cuda.so: cannot open shared object file"


def test_doctor_finds_each_failure_of_section_8():
    cpu = {
        "versions": {"torch": "2.8.0", "vllm": None, "packaging": "25.0"},
        "torch": {"version": "2.8.0", "cuda": None, "libtorch_cuda": False},
        "flash_attn_3": "ModuleNotFoundError: No module named 'flash_attn_3'",
        "vllm": "vllm is not importable",
    }
    found = {f.id: f for f in diagnose(detect_output(cpu, "ninja\ncmake"), "~/p/.venv", VARS)}
    assert set(found) == {"cpu-torch", "fa3-missing", "vllm-missing"}
    assert found["cpu-torch"].problem == "torch 2.8.0 is a CPU-only build (no CUDA)"
    assert "--pre --index-url https://download.pytorch.org/whl/nightly/cu128 torch" in found["cpu-torch"].remedy
    assert found["fa3-missing"].remedy.endswith("ATTN_IMPL=sdpa")
    assert "uv pip uninstall vllm" in found["vllm-missing"].remedy and "pypi.nvidia.com" in found["vllm-missing"].remedy
    broken = {"versions": {"torch": "2.8.0"}, "torch": {"error": LIBTORCH_ERROR}, "flash_attn_3": None, "vllm": None}
    found = {f.id: f for f in diagnose(detect_output(broken), "~/p/.venv", VARS)}
    assert found["cpu-torch"].problem.startswith("ImportError: libtorch_cuda.so not found")
    assert found["build-prereqs"].packages == ("packaging", "ninja", "cmake")
    assert "--no-build-isolation and MAX_JOBS=8" in found["build-prereqs"].remedy
    healthy = {
        "versions": {"torch": "2.9.0", "packaging": "25", "ninja": "1.13", "cmake": "4.1"},
        "torch": {"version": "2.9.0", "cuda": "12.8", "libtorch_cuda": True},
        "flash_attn_3": None,
        "vllm": None,
    }
    assert diagnose(detect_output(healthy), "~/p/.venv", VARS) == []
    assert diagnose('{"venv": "missing"}\n@@arch\nx\n@@tools\n', "~/p/.venv", VARS)[0].id == "venv-missing"


def test_doctor_fixes_are_tasks_grouped_by_findings():
    setup = setup_play(str(SETUP))
    prereqs = diagnose(
        detect_output(
            {
                "versions": {},
                "torch": {"version": "2.9", "cuda": "12.8", "libtorch_cuda": True},
                "flash_attn_3": None,
                "vllm": None,
            }
        ),
        "v",
        VARS,
    )
    diagnoses = {
        "a": Diagnosis("a", "v", tuple(prereqs)),
        "b": Diagnosis("b", "v", tuple(prereqs)),
        "c": Diagnosis("c", "v"),
    }
    book = fix_playbook(setup, diagnoses, "test")
    assert [p.hosts for p in book.plays] == ["a,b"]
    assert book.plays[0].tasks[0].args["packages"] == ["packaging", "ninja", "cmake"]
    torch_fix = [t.name for t in FIXES["cpu-torch"](setup, prereqs[0])]
    assert torch_fix[0] == "doctor: uninstall torch torchvision torchaudio"
    assert "PyTorch nightly cu128 (section 2, Option A)" in torch_fix and torch_fix[-1].startswith("torch imports")


# `nvidia-smi -L` in its format, with the recorded H200's name and UUID (tests/recorded/h200-nvidia-smi-q.txt),
# and nvidia-smi's message on a host whose driver is not loaded
GPU_LIST = "GPU 0: NVIDIA H200 (UUID: GPU-2118561a-f2eb-496b-e3c2-589114747d6c)"
NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)
HEALTHY = {
    "versions": {"torch": "2.8.0", "packaging": "25", "ninja": "1.13", "cmake": "4.1", "trl": "0.23.1"},
    "torch": {"version": "2.8.0+cu128", "cuda": "12.8", "libtorch_cuda": True, "cuda_available": True},
    "flash_attn_3": None,
    "vllm": None,
    "grpo": None,
}


def host_output(seen: dict, *, arch: str = "x86_64", gpu: str = GPU_LIST, stack: dict | None = None) -> str:
    return (
        f"{json.dumps(seen)}\n@@arch\n{arch}\n@@tools\nninja\ncmake\n@@gpu\n{gpu}\n"
        f"@@stack\n{json.dumps(stack) if stack else ''}\n"
    )


def test_doctor_finds_no_gpu_cuda_unavailable_and_a_stack_that_cannot_train():
    assert diagnose(host_output(HEALTHY), "v", VARS) == []
    found = {f.id: f for f in diagnose(host_output(HEALTHY, gpu=NO_DRIVER), "v", VARS)}
    assert set(found) == {"no-gpu"} and NO_DRIVER[:60] in found["no-gpu"].problem
    assert diagnose(host_output(HEALTHY, gpu=NO_DRIVER), "v", {**VARS, "require_gpu": False}) == []
    no_cuda = {**HEALTHY, "torch": {**HEALTHY["torch"], "cuda_available": False}}
    found = {f.id: f for f in diagnose(host_output(no_cuda), "v", VARS)}
    assert (
        set(found) == {"cuda-unavailable"} and "torch.cuda.is_available() is False" in found["cuda-unavailable"].problem
    )
    broken = {**HEALTHY, "grpo": "ModuleNotFoundError: No module named 'vllm_ascend'"}
    broken["versions"] = {**HEALTHY["versions"], "transformers": "5.24.0"}
    found = {f.id: f for f in diagnose(host_output(broken), "v", {**VARS, "stack_lock": "locks/x.txt"})}
    assert found["stack-broken"].problem.startswith("from trl import GRPOTrainer fails (ModuleNotFoundError")
    assert "transformers 5.24.0" in found["stack-broken"].problem and "locks/x.txt" in found["stack-broken"].remedy


def test_doctor_fa3_remedy_depends_on_the_architecture_and_a_recorded_fallback_is_a_note():
    missing = {**HEALTHY, "flash_attn_3": "ModuleNotFoundError: No module named 'flash_attn_3'"}
    x86 = next(f for f in diagnose(host_output(missing), "v", VARS) if f.id == "fa3-missing")
    assert "no FA3 wheel is published for x86_64" in x86.remedy and not x86.note
    arm = next(f for f in diagnose(host_output(missing, arch="aarch64"), "v", VARS) if f.id == "fa3-missing")
    assert arm.remedy.startswith("install the FA3 wheel (section 5)")
    recorded = diagnose(host_output(missing, stack={"attn_impl": "eager"}), "v", VARS)
    assert [(f.id, f.note) for f in recorded] == [("fa3-missing", True)] and "ATTN_IMPL=eager" in recorded[0].problem
    diagnoses = {"a": Diagnosis("a", "v", tuple(recorded))}
    assert exit_code(diagnoses) == 0  # a note never fails the exit code
    assert fix_playbook(setup_play(str(SETUP)), diagnoses, "t").plays == ()  # and has nothing to fix
    cpu_host = diagnose(host_output(missing, gpu=NO_DRIVER), "v", {**VARS, "require_gpu": False})
    assert [(f.id, f.note) for f in cpu_host] == [("fa3-missing", True)]


def test_every_uv_step_of_the_setup_gets_uv_env_and_the_chosen_uv():
    play = load_playbook(SETUP).plays[0]
    uv_steps = [t for t in play.tasks if t.action in ("pip", "venv", "uv", "download")]
    assert len(uv_steps) == 10
    assert all(t.args.get("env") == "{{ uv_env }}" for t in uv_steps), [t.name for t in uv_steps]
    assert all(t.args.get("uv") == "{{ uv_bin }}" for t in uv_steps if t.action in ("pip", "venv"))
    locked = [t.name for t in uv_steps if t.args.get("lock") == "{{ stack_lock }}"]
    assert locked == [
        "pip, wheel and setuptools (uv pip install -U)",
        "PyTorch 2.8.0 cu128 stable wheels (x86_64)",
        "vLLM 0.10.2 (section 3)",
        "NLP / training libraries (section 4)",
        "FlashAttention 3 install (section 5)",
    ]
