"""What a playbook would do, without doing it: --list-hosts, --list-tasks, --list-tags,
--syntax-check, and --start-at-task's cut. Pure: a loaded playbook in, lines out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .inventory import Inventory
from .model import FleetError, RunOptions
from .playbook import Playbook


def start_at(playbook: Playbook, name: str) -> Playbook:
    """The playbook from the first task named `name` on: earlier plays and tasks dropped."""
    for index, play in enumerate(playbook.plays):
        for position, task in enumerate(play.tasks):
            if task.title == name:
                first = replace(play, tasks=tuple(play.tasks[position:]))
                return replace(playbook, plays=(first, *playbook.plays[index + 1 :]))
    titles = [t.title for p in playbook.plays for t in p.tasks]
    near = [t for t in titles if name.lower() in t.lower()][:5]
    hint = f" (similar: {', '.join(map(repr, near))})" if near else " (see --list-tasks)"
    raise FleetError(f"--start-at-task: no task named {name!r} in {playbook.path}{hint}")


def syntax_ok(playbook: Playbook) -> str:
    tasks = sum(len(p.tasks) for p in playbook.plays)
    return f"{playbook.path}: syntax ok ({len(playbook.plays)} play(s), {tasks} task(s))"


def _selected(task: Any, play: Any, options: RunOptions) -> bool:
    tags = set(task.tags) | set(play.tags)
    if options.tags and not (tags & options.tags or "always" in tags):
        return False
    return not (options.skip_tags and tags & options.skip_tags)


def _play_hosts(play: Any, inventory: Inventory, limit: str | None) -> list[str]:
    hosts = inventory.select(play.hosts)
    if limit:
        limited = set(inventory.require(limit))
        hosts = [h for h in hosts if h in limited]
    return hosts


def hosts(playbook: Playbook, *, inventory: Inventory, limit: str | None, options: RunOptions) -> list[str]:
    lines = []
    for play in playbook.plays:
        selected = _play_hosts(play, inventory, limit)
        lines.append(f"play {play.title!r} ({play.source}): {len(selected)} host(s)")
        lines += [f"  {h}" for h in selected]
    return lines


def tasks(playbook: Playbook, *, inventory: Inventory, limit: str | None, options: RunOptions) -> list[str]:
    lines = []
    for play in playbook.plays:
        lines.append(f"play {play.title!r} ({play.source})")
        for task in play.tasks:
            if _selected(task, play, options):
                tags = sorted(set(task.tags) | set(play.tags))
                lines.append(f"  {task.title}" + (f"  tags: {', '.join(tags)}" if tags else ""))
    return lines


def tags(playbook: Playbook, *, inventory: Inventory, limit: str | None, options: RunOptions) -> list[str]:
    lines = []
    for play in playbook.plays:
        found = sorted(set(play.tags).union(*(t.tags for t in play.tasks)))
        lines.append(f"play {play.title!r}: tags: {', '.join(found) or '(none)'}")
    return lines
