"""Which facts a play uses, so that a play gathers only those.

Facts come in groups by what they cost the host: `system` (hostname, arch, kernel, OS, memory,
the recorded custom facts: shell builtins only, always gathered), `resources` (CPUs, free disk:
nproc, df), `tools` (python3, uv: a program each) and `gpu` (driver, CUDA, GPUs, nvcc, GPU
health: nvidia-smi three times, on a GPU node the costliest part of a run's first look). A play
gathers the groups its templates name: every string of its vars, keywords and tasks, the files its
`template` tasks render, and the host's variables are read for `facts.NAME` and `facts['NAME']`.
`facts` used in any other way (whole, by a computed key, a name fleet does not know, a template
file that cannot be read yet) gathers every group. An action that reads `ctx.facts` in Python
says which groups with `Action.facts_used` (one that does not say gets all of them; fleet's own
actions say when they read any). A fact of a group that was not gathered fails loudly
where it is used (facts.NotGathered), never reads as empty."""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

FIELD_GROUPS = {
    **dict.fromkeys(("hostname", "arch", "kernel", "os_id", "os_version", "os_name", "memory_bytes", "custom",
                     "stack"), "system"),
    **dict.fromkeys(("cpus", "disk_free_bytes"), "resources"),
    **dict.fromkeys(("python", "uv"), "tools"),
    **dict.fromkeys(("driver", "cuda", "cuda_toolkit", "gpus", "gpu_error", "health", "gpu_count", "gpu_name"), "gpu"),
}  # fmt: skip
ALL_GROUPS = frozenset(FIELD_GROUPS.values())
SYSTEM = frozenset({"system"})

_USE = re.compile(r"\bfacts\b(?:\s*\.\s*(?P<attr>[A-Za-z_]\w*)|\s*\[\s*(?P<q>['\"])(?P<key>\w+)(?P=q)\s*\])?")


def groups_named(texts: Iterable[str]) -> frozenset[str]:
    """The fact groups these template texts use (every group when one uses `facts` otherwise
    than by a name fleet knows)."""
    groups = set(SYSTEM)
    for text in texts:
        if "facts" not in text:
            continue
        for use in _USE.finditer(text):
            group = FIELD_GROUPS.get(use["attr"] or use["key"] or "")
            if group is None:
                return ALL_GROUPS
            groups.add(group)
    return frozenset(groups)


def strings(value: Any) -> Iterator[str]:
    """Every string inside value (keys too), through mappings and sequences."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from strings(item)


# Keywords that hold a bare expression (`when: facts.arch == "aarch64"`): read whole. Every other
# string is read only inside its {{ }} and {% %}, so a path such as ~/.fleet/facts.d names nothing.
_TASK_EXPRESSIONS = ("when", "loop", "changed_when", "failed_when", "until", "become", "ignore_errors", "no_log")
_TASK_TEXTS = ("environment", "become_user")  # and args, unless the action's are expressions
_PLAY_EXPRESSIONS = ("become", "gather_facts")
_PLAY_TEXTS = ("vars", "defaults", "environment", "become_user")
_EXPRESSION_ACTIONS = ("assert",)  # whose arguments are expressions (`that:`)
_TEMPLATE_PART = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)


def template_parts(texts: Iterable[str]) -> Iterator[str]:
    """The {{ }} and {% %} parts of texts (an unclosed one to the end)."""
    for text in texts:
        if "{" in text:
            yield from _TEMPLATE_PART.findall(text)
            last = max(text.rfind("{{"), text.rfind("{%"))
            if last >= 0 and not _TEMPLATE_PART.match(text, last):
                yield text[last:]


def play_texts(play: Any) -> Iterator[str]:
    """The template texts of a play: its keywords, its tasks', and the files its `template`
    tasks render. A file that cannot be read now (its name is a template, it is missing) makes
    the play use `facts` in an unknown way."""
    for name in _PLAY_EXPRESSIONS:
        yield from strings(getattr(play, name, None))
    for name in _PLAY_TEXTS:
        yield from template_parts(strings(getattr(play, name, None)))
    for task in play.tasks:
        for name in _TASK_EXPRESSIONS:
            yield from strings(getattr(task, name, None))
        texts = strings(getattr(task, "args", None))
        yield from texts if task.action in _EXPRESSION_ACTIONS else template_parts(texts)
        for name in _TASK_TEXTS:
            yield from template_parts(strings(getattr(task, name, None)))
        if task.action == "template":
            src = task.args.get("src") if isinstance(task.args, Mapping) else None
            try:
                if not isinstance(src, str) or "{" in src:
                    raise OSError
                yield from template_parts([(Path(play.base_dir) / src).read_text(errors="replace")])
            except OSError:
                yield "facts"  # whatever it holds: every group


def actions_use(play: Any) -> frozenset[str]:
    """The groups the play's actions read from ctx.facts themselves."""
    from .task import lookup

    groups: set[str] = set()
    for task in play.tasks:
        cls = lookup(task.action)
        used = cls.facts_used
        if used is None:  # not said: fleet's own actions read none, anyone else's may read any
            used = frozenset() if cls.__module__.split(".")[0] == "fleet" else ALL_GROUPS
        groups |= used
    return frozenset(groups)


# id(play) -> (a weak reference to it, its groups): asked by every host of a run, and gone with the
# play (plays are not hashable, and a long-lived program must not keep every play it ran).
_PLAYS: dict[int, tuple[weakref.ref[Any], frozenset[str]]] = {}


def play_groups(play: Any) -> frozenset[str]:
    """The groups a play names, in its templates or through its actions (asked once per play)."""
    key = id(play)
    known = _PLAYS.get(key)
    if known is None or known[0]() is not play:
        ref = weakref.ref(play, lambda _: _PLAYS.pop(key, None))
        known = _PLAYS[key] = (ref, groups_named(play_texts(play)) | actions_use(play))
    return known[1]
