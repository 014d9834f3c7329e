"""`stack`: record a venv's training stack as the custom fact ~/.fleet/facts.d/stack.json, which
`fleet facts` shows per host (and marks where it differs from the rest of the fleet).

It also records the attention implementation training will really use. train_grpo.py decides
it per model class (flash_attention_3 -> flash_attention_2 -> sdpa -> eager, skipping what the
host or the class cannot do: gpt-oss does not support sdpa) and logs its choice; the setup
playbook's smoke step loads a gpt-oss model with that logic, so `smoke_log` holds the answer.
Without a smoke log the choice is the import-based guess (fa3, fa2, else sdpa) and the note says
it is unproven. Anything but flash_attention_3 is a recap note. The file is written atomically and
only when its content changes, so a re-run stays unchanged."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .. import shell
from ..facts import sections
from ..model import CommandResult, Plan, Upload
from ..probe import Probe
from ..task import Action, Args, Context, action
from .uv import venv_python

STACK_FILE = "~/.fleet/facts.d/stack.json"

# Helpers shared by the Python snippets that run in a host's venv (here and in fleet doctor).
PY_HELPERS = r"""import importlib, importlib.metadata as m, json
def version(n):
    try:
        return m.version(n)
    except m.PackageNotFoundError:
        return None
def error(e):
    return ("%s: %s" % (type(e).__name__, e)).strip()[:300]
"""

# Runs in the venv's Python: versions by metadata (cheap), torch and the attention kernels by import
# (what training will do).
STACK = (
    PY_HELPERS
    + r"""s = {"torch": version("torch"), "torch_cuda": None}
try:
    import torch
    s["torch"], s["torch_cuda"] = str(torch.__version__), torch.version.cuda
except Exception as e:
    s["torch_error"] = error(e)
for n in ("vllm", "transformers", "trl", "peft", "datasets", "kernels"):
    s[n] = version(n)
for mod in ("flash_attn_3", "flash_attn"):
    try:
        importlib.import_module(mod)
        s[mod] = True
    except Exception as e:
        s[mod], s[mod + "_error"] = False, error(e)
print(json.dumps(s))
"""
)

RECORDED_KEYS = (
    "torch", "torch_cuda", "vllm", "transformers", "trl", "peft", "datasets", "kernels",
    "flash_attn_3", "attn_impl", "attn_proven",
)  # fmt: skip

# train_grpo.py's log: "INFO attention: eager (flash_attention_3: no CUDA device; ...)"
_CHOSEN = re.compile(r"\bINFO attention: (\S+)(?: \((.*)\))?\s*$")


def smoke_attention(log: str) -> tuple[str, str] | None:
    """(implementation, why the better ones were refused) from the last choice in the log."""
    for line in reversed(log.splitlines()):
        m = _CHOSEN.search(line)
        if m:
            return m.group(1), (m.group(2) or "").strip()
    return None


def choose_attention(
    seen: Mapping[str, Any], forced: str | None, smoke: tuple[str, str] | None = None
) -> tuple[str, str | None]:
    """(attn_impl, note for the recap or None)."""
    if forced:
        return forced, None if forced == "flash_attention_3" else f"attention set to {forced} by configuration"
    if smoke:
        impl, why = smoke
        if impl == "flash_attention_3":
            return impl, None
        return impl, f"the smoke step trained with {impl}{f' ({why})' if why else ''}; ATTN_IMPL={impl}"
    if seen.get("flash_attn_3"):
        return "flash_attention_3", None
    impl = "flash_attention_2" if seen.get("flash_attn") else "sdpa"
    why = seen.get("flash_attn_3_error") or "not importable"
    return impl, (
        f"flash_attn_3 is not usable here ({why}); this host trains with {impl} (ATTN_IMPL={impl}) "
        "unless the model class refuses it (no smoke step proved it)"
    )


@dataclass(frozen=True)
class Seen:
    """What the venv's Python reported, the stack file as recorded last time, and the attention the
    smoke step's log says training chose (None: no log)."""

    stack: dict[str, Any]
    recorded: dict[str, Any]
    smoke: tuple[str, str] | None = None

    @classmethod
    def of(cls, result: CommandResult) -> Seen:
        parts = sections(result.stdout)
        stack = _json(parts.get("stack", "").splitlines()[-1:] or ["{}"])
        return cls(stack, _json([parts.get("file", "")]), smoke_attention(parts.get("smoke", "")))


class StackArgs(Args):
    venv: str
    attn_impl: str | None = None  # force a choice; empty: what the smoke step used, else from imports
    smoke_log: str | None = None  # train_grpo.py's training.log of the setup's smoke step
    path: str = STACK_FILE


@action
class Stack(Action):
    name = "stack"
    Args: ClassVar = StackArgs

    def probe(self) -> Probe[Seen]:
        py = venv_python(self.args.venv)
        return Probe(self.script(py), Seen.of)

    def script(self, py: str) -> str:
        return (
            f"echo @@stack; if [ -x {py} ]; then {py} -c {shell.quote(STACK)} 2>/dev/null "
            '|| echo \'{"error": "the stack probe crashed"}\'; else echo \'{"missing": true}\'; fi; '
            f"echo @@file; cat {shell.path(self.args.path)} 2>/dev/null; "
            + (
                f"echo @@smoke; grep 'INFO attention: ' {shell.path(self.args.smoke_log)} 2>/dev/null | tail -n 1; "
                if self.args.smoke_log
                else ""
            )
            + "true"
        )

    def plan(self, observed: Seen, ctx: Context) -> Plan:
        seen, recorded = observed.stack, observed.recorded
        impl, note = choose_attention(seen, (self.args.attn_impl or "").strip() or None, observed.smoke)
        if seen.get("missing"):
            note = None  # nothing to say about a venv that is not there yet (--check before setup)
        stack = {key: seen.get(key) for key in RECORDED_KEYS}
        stack["flash_attn_3"] = bool(seen.get("flash_attn_3"))
        stack["attn_impl"] = impl
        stack["attn_proven"] = bool(observed.smoke) and not (self.args.attn_impl or "").strip()
        data = {**stack, **({"note": note} if note else {})}
        text = describe(stack)
        if recorded == stack:
            return Plan(summary=f"stack: {text}", data=data)
        if seen.get("missing") and ctx.check:
            text = f"after the steps above install it ({self.args.venv} does not exist yet)"
        content = (json.dumps(stack, indent=2, sort_keys=True) + "\n").encode()
        return Plan(
            uploads=(Upload(self.args.path, content, 0o644),),
            summary=f"record stack: {text}",
            diff="".join(
                f"~ {k}: {recorded.get(k)!r} -> {stack[k]!r}\n" for k in RECORDED_KEYS if recorded.get(k) != stack[k]
            ),
            data=data,
        )


def _json(lines: list[str]) -> dict[str, Any]:
    try:
        value = json.loads(lines[0]) if lines and lines[0].strip() else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def describe(stack: Mapping[str, Any]) -> str:
    torch = stack.get("torch")
    parts = [f"torch {torch} (CUDA {stack.get('torch_cuda') or 'none'})" if torch else "no torch"]
    parts += [f"{k} {stack[k]}" for k in ("vllm", "transformers", "trl") if stack.get(k)]
    parts.append(f"attn {stack['attn_impl']}")
    return ", ".join(parts)
