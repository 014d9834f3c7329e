"""The `fleet` command: parse options, call the library, show the result. Nothing else."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .model import FleetError
from .sanitize import visible

EXIT_BAD_INPUT = 1


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, and our exit code for bad input
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def default_inventory() -> str | None:
    """FLEET_INVENTORY, else ./inventories/local, else the built-in local inventory (None)."""
    if os.environ.get("FLEET_INVENTORY"):
        return os.environ["FLEET_INVENTORY"]
    local = Path("inventories/local")
    return str(local) if local.exists() else None


def load_inventory_arg(path: str | None, strict_hosts: bool = False) -> Any:
    from .inventory import Inventory, load_inventory

    if path:
        inventory = load_inventory(path)
        inventory.strict_hosts = strict_hosts
        return inventory
    inv = Inventory(source="<built-in local>", strict_hosts=strict_hosts)
    inv.add_host("localhost", "local", {"connection": "local"})
    inv.reconcile()
    return inv


def parse_extra_vars(values: Sequence[str]) -> dict[str, Any]:
    import yaml

    from .yamlfile import load_yaml

    out: dict[str, Any] = {}
    for value in values:
        if value.startswith("@"):
            data = load_yaml(value[1:])
            if not isinstance(data, dict):
                raise FleetError(f"{value[1:]}: extra vars file must be a mapping")
            out.update(data)
            continue
        key, sep, raw = value.partition("=")
        if not sep or not key.strip():
            raise FleetError(f"-e {value!r}: expected key=value or @file.yaml")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def _common(p: argparse.ArgumentParser) -> None:
    """The options every command takes, spelled the same everywhere."""
    p.add_argument(
        "-i",
        "--inventory",
        default=default_inventory(),
        help="inventory folder or file (default: $FLEET_INVENTORY, ./inventories/local, or this machine)",
    )
    p.add_argument(
        "-l",
        "--limit",
        "-H",
        "--hosts",
        dest="pattern",
        default=None,
        help="host pattern: names, globs (gh200-*), groups, a,b  !excluded  &intersection; "
        "@failed: the hosts that failed or were unreachable in the last run; @FILE: one host per line",
    )
    p.add_argument("--forks", type=int, default=32, help="hosts worked on at once (default 32)")
    p.add_argument("--json", action="store_true", help="JSON Lines events (see docs/events.md)")
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: output of changed and failed tasks; -vv: also the scripts",
    )
    p.add_argument(
        "--strict-hosts",
        action="store_true",
        default=os.environ.get("FLEET_STRICT_HOSTS", "") not in ("", "0"),
        help="a host pattern element that matches nothing is an error (default: a warning; env FLEET_STRICT_HOSTS=1)",
    )
    p.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="variables that override all others (repeatable; @file.yaml reads a file)",
    )
    p.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="trust and remember keys of hosts never seen before (changed keys are still refused)",
    )


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = Parser(prog="fleet", description="Fleet automation for GPU training clusters.")
    parser.add_argument("--version", action="version", version=f"fleet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = sub.add_parser("run", help="converge hosts with a playbook (YAML or Python)")
    run.add_argument("playbook")
    _common(run)
    run.add_argument("-C", "--check", action="store_true", help="change nothing; report what would change")
    run.add_argument("-D", "--diff", action="store_true", help="show what changes in files and packages")
    run.add_argument("-t", "--tags", default="", help="only tasks with these tags (comma list)")
    run.add_argument("--skip-tags", default="", help="skip tasks with these tags")
    run.add_argument(
        "--no-batch", action="store_true", help="send each probe on its own, not batched (slower; for debugging)"
    )
    run.add_argument("--no-lock", action="store_true", help="do not take the per-host run lock (experts only)")
    run.add_argument("--lock-wait", type=float, default=60.0, metavar="S", help="wait for another run's lock (60)")
    run.add_argument("--start-at-task", metavar="NAME", help="begin at the first task of this name")
    listing = run.add_mutually_exclusive_group()
    for flag, text in (
        ("--list-hosts", "print the hosts each play would run on, then stop"),
        ("--list-tasks", "print the tasks each play would run (after --tags/--skip-tags), then stop"),
        ("--list-tags", "print the tags of each play's tasks, then stop"),
        ("--syntax-check", "load and validate the playbook, then stop"),
    ):
        listing.add_argument(flag, action="store_true", help=text)
    run.set_defaults(handler=cmd_run)

    shell = sub.add_parser(
        "shell",
        help="run a shell command on every selected host at once; identical output grouped",
        description="fleet shell PATTERN -- COMMAND...  (e.g. fleet shell 'gh200-*' -- nvidia-smi -L)",
    )
    shell.add_argument("target", metavar="PATTERN", help="host pattern (as --hosts)")
    shell.set_defaults(words=[])  # what follows `--`, split off before parsing (see main)
    _common(shell)
    shell.add_argument("-b", "--become", action="store_true", help="run as root (sudo)")
    shell.add_argument("--become-user", default="root", help="with --become: run as this user (default root)")
    shell.add_argument("--timeout", type=float, default=None, help="seconds before the command is stopped")
    shell.set_defaults(handler=cmd_shell)

    completion = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    completion.add_argument("shell", choices=("bash", "zsh"), nargs="?", default="bash")
    completion.set_defaults(handler=cmd_completion)

    facts = sub.add_parser("facts", help="arch, OS, driver, CUDA, GPUs and training stack per host")
    _common(facts)
    facts.add_argument(
        "-c", "--config", default=None, help="a training config: add an `attention` column, what training its "
        "model on each host will really use (asked of train_grpo.py there)"
    )  # fmt: skip
    facts.set_defaults(handler=cmd_facts)

    health = sub.add_parser(
        "health", help="GPU health only, fast: exit 0 when every host is fit, else one line per problem"
    )
    _common(health)
    health.set_defaults(handler=cmd_health)

    inventory = sub.add_parser("inventory", help="list the hosts a pattern selects, with groups and vars")
    _common(inventory)
    inventory.set_defaults(handler=cmd_inventory)

    doctor = sub.add_parser("doctor", help="find the setup guide's known failures (section 8) per host; --fix them")
    _common(doctor)
    doctor.add_argument("--fix", action="store_true", help="apply the remedies as tasks, then look again")
    doctor.add_argument(
        "--only", default="", metavar="ID[,ID]", help="with --fix: only these findings (e.g. fa3-missing)"
    )
    doctor.add_argument("-C", "--check", action="store_true", help="with --fix: show what the remedies would change")
    doctor.add_argument("--playbook", default="playbooks/setup.yaml", help="the setup playbook (default %(default)s)")
    doctor.set_defaults(handler=cmd_doctor)

    init = sub.add_parser("init", help="write an editable copy of the playbooks, training configs and inventories")
    init.add_argument("directory", help="the new lab's folder (created; nothing in it is overwritten)")
    init.set_defaults(handler=cmd_init)

    from .train.cli import add_subcommand as add_train  # argparse only: the engine loads when a command runs

    add_train(sub, _common)
    return parser


def run_options(args: argparse.Namespace, **extra: Any) -> Any:
    from .model import RunOptions

    return RunOptions(
        extra_vars=parse_extra_vars(args.extra_vars),
        forks=max(1, args.forks),
        accept_new_host_keys=args.accept_new_host_keys,
        **extra,
    )


def _tagset(text: str) -> frozenset[str]:
    return frozenset(t.strip() for t in text.split(",") if t.strip())


def host_pattern(args: argparse.Namespace) -> str | None:
    """--hosts/--limit, with @failed and @FILE read into a host list."""
    from .runlog import resolve_limit

    return resolve_limit(args.pattern)


def cmd_run(args: argparse.Namespace) -> int:
    from . import outline
    from .playbook import check_tags, load_playbook
    from .report import choose_reporter
    from .resources import find
    from .runner import run_playbook

    inventory = load_inventory_arg(args.inventory, args.strict_hosts)
    playbook = load_playbook(find(args.playbook))  # ./playbooks/... first, else the shipped copy
    if args.start_at_task:
        playbook = outline.start_at(playbook, args.start_at_task)
    options = run_options(
        args,
        check=args.check,
        diff=args.diff,
        tags=_tagset(args.tags),
        skip_tags=_tagset(args.skip_tags),
        batch_probes=not args.no_batch,
        no_lock=args.no_lock,
        lock_wait=max(0.0, args.lock_wait),
    )
    check_tags(playbook, options.tags, options.skip_tags)
    pattern = host_pattern(args)
    if args.syntax_check:
        print(outline.syntax_ok(playbook))
        return 0
    for flag, show in (("list_hosts", outline.hosts), ("list_tasks", outline.tasks), ("list_tags", outline.tags)):
        if getattr(args, flag):
            print("\n".join(show(playbook, inventory=inventory, limit=pattern, options=options)))
            return 0
    reporter = choose_reporter(json_lines=args.json, verbosity=args.verbose)
    return run_playbook(playbook, inventory, options, reporter, limit=pattern).exit_code


def cmd_shell(args: argparse.Namespace) -> int:
    from .adhoc import run_shell

    words = args.words
    if not words:
        raise FleetError("fleet shell: no command given (fleet shell PATTERN -- COMMAND ...)")
    if args.pattern and args.pattern != args.target:
        raise FleetError(f"fleet shell: two host patterns given ({args.target!r} and --hosts {args.pattern!r})")
    args.pattern = args.target
    inventory = load_inventory_arg(args.inventory)
    hosts = inventory.require(host_pattern(args))
    return run_shell(
        inventory,
        hosts,
        words,
        run_options(args),
        become=args.become,
        become_user=args.become_user,
        timeout=args.timeout,
        as_json=args.json,
    )


def cmd_completion(args: argparse.Namespace) -> int:
    from .completion import script

    print(script(build_parser(), args.shell))
    return 0


def cmd_facts(args: argparse.Namespace) -> int:
    from .factsview import show_facts

    inventory = load_inventory_arg(args.inventory, args.strict_hosts)
    hosts = inventory.require(host_pattern(args))
    return show_facts(inventory, hosts, run_options(args), as_json=args.json, train_config=args.config)


def cmd_health(args: argparse.Namespace) -> int:
    from .healthview import show_health

    inventory = load_inventory_arg(args.inventory, args.strict_hosts)
    return show_health(inventory, inventory.require(host_pattern(args)), run_options(args), as_json=args.json)


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import cmd_doctor as doctor

    return doctor(args)


def cmd_init(args: argparse.Namespace) -> int:
    from .scaffold import init_lab

    target = Path(args.directory)
    written = init_lab(target)
    tops = sorted({str(rel.parts[0]) for rel in written})
    print(f"wrote {len(written)} files under {target}/ ({', '.join(tops)}); edit them, and run fleet from there")
    return 0


def cmd_inventory(args: argparse.Namespace) -> int:
    from .events import EventWriter
    from .report import print_table
    from .secrets import Redactor, inventory_marked_names, marked_names, secret_values

    inventory = load_inventory_arg(args.inventory, args.strict_hosts)
    hosts = [inventory.host(h) for h in inventory.require(host_pattern(args))]
    extra = parse_extra_vars(args.extra_vars)
    names = inventory_marked_names(inventory) | marked_names(extra)
    redactor = Redactor(secret_values(extra, *(h.vars for h in hosts), marked=names), names)
    if args.json:
        events = EventWriter(redactor=redactor)
        for h in hosts:
            events.emit("host", host=h.name, groups=list(h.groups), vars={**h.vars, **extra})
        return 0
    rows = [(h.name, ",".join(h.groups), json.dumps(redactor.show({**h.vars, **extra}), default=str)) for h in hosts]
    print_table(rows, ("host", "groups", "vars"), title=f"{len(hosts)} host(s) in {inventory.source}")
    return 0


def split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """`fleet shell PATTERN [options] -- CMD ...`: the words after `--` are the command's own,
    whatever they look like, so they never reach argparse."""
    if "shell" in argv and "--" in argv[argv.index("shell") :]:
        cut = argv.index("--", argv.index("shell"))
        return argv[:cut], argv[cut + 1 :]
    return argv, []


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the process is ours (the console script, python -m fleet.cli)
        # Start-up creates ~40k objects that live until exit (modules, pydantic's schemas); a
        # collection every 700 allocations walked them again and again: ~30 ms of a one-host
        # run. Collections still happen, a hundred times less often.
        gc.set_threshold(100_000, 10, 10)
    parser = build_parser()
    options, words = split_command(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(options)
    if words:
        args.words = words
    try:
        return int(args.handler(args) or 0)
    except FleetError as exc:
        print(f"fleet: error: {visible(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\nfleet: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fleet ... | head`: the reader has all it wanted
        from .report import pipe_closed

        pipe_closed()
        return 141
    finally:
        if argv is None:  # the process ends next (the console script, python -m fleet.cli)
            # Spare the interpreter's final garbage collection a walk over every object left:
            # exit frees them anyway, and the walk cost ~0.25 s of CPU on a one-host run.
            gc.freeze()


def run() -> None:
    """The `fleet` command as a process: main(), then the process ends at once with its code.
    The interpreter's teardown frees every module's objects one by one while paramiko's transport
    threads notice their closed sockets: ~0.03 s of a one-host run, ~0.08 s of a 50-host one,
    after everything was written. Under a tracer or coverage (whose results are saved at exit)
    the process ends the usual way."""
    code = main()
    if sys.gettrace() is not None or "coverage" in sys.modules:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing more to say
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
