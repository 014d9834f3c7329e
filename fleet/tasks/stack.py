"""`stack`: record a venv's training stack as the custom fact ~/.fleet/facts.d/stack.json, which
`fleet facts` shows per host (and marks where it differs from the rest of the fleet).

It also chooses the attention implementation: flash_attention_3 when flash_attn_3 imports, else
flash_attention_2 when flash_attn (FA2) imports, else sdpa, and says so as a recap note. The file
is written atomically and only when its content changes, so a re-run stays unchanged."""

from __future__ import annotations

import json
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
STACK = PY_HELPERS + r"""s = {"torch": version("torch"), "torch_cuda": None}
try:
    import torch
    s["torch"], s["torch_cuda"] = str(torch.__version__), torch.version.cuda
except Exception as e:
    s["torch_error"] = error(e)
for n in ("vllm", "transformers", "trl"):
    s[n] = version(n)
for mod in ("flash_attn_3", "flash_attn"):
    try:
        importlib.import_module(mod)
        s[mod] = True
    except Exception as e:
        s[mod], s[mod + "_error"] = False, error(e)
print(json.dumps(s))
"""

RECORDED_KEYS = ("torch", "torch_cuda", "vllm", "transformers", "trl", "flash_attn_3", "attn_impl")


def choose_attention(seen: Mapping[str, Any], forced: str | None) -> tuple[str, str | None]:
    """(attn_impl, note for the recap or None)."""
    if forced:
        return forced, None if forced == "flash_attention_3" else f"attention set to {forced} by configuration"
    if seen.get("flash_attn_3"):
        return "flash_attention_3", None
    impl = "flash_attention_2" if seen.get("flash_attn") else "sdpa"
    why = seen.get("flash_attn_3_error") or "not importable"
    return impl, f"flash_attn_3 is not usable here ({why}); this host trains with {impl} (ATTN_IMPL={impl})"


@dataclass(frozen=True)
class Seen:
    """What the venv's Python reported, and the stack file as recorded last time."""

    stack: dict[str, Any]
    recorded: dict[str, Any]

    @classmethod
    def of(cls, result: CommandResult) -> Seen:
        parts = sections(result.stdout)
        return cls(_json(parts.get("stack", "").splitlines()[-1:] or ["{}"]), _json([parts.get("file", "")]))


class StackArgs(Args):
    venv: str
    attn_impl: str | None = None  # force a choice; empty: decide from what imports
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
            f"echo @@file; cat {shell.path(self.args.path)} 2>/dev/null; true"
        )

    def plan(self, observed: Seen, ctx: Context) -> Plan:
        seen, recorded = observed.stack, observed.recorded
        impl, note = choose_attention(seen, (self.args.attn_impl or "").strip() or None)
        if seen.get("missing"):
            note = None  # nothing to say about a venv that is not there yet (--check before setup)
        stack = {key: seen.get(key) for key in RECORDED_KEYS}
        stack["flash_attn_3"] = bool(seen.get("flash_attn_3"))
        stack["attn_impl"] = impl
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
