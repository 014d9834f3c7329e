"""The `fleet` command: parse options, call the library, show the result. Nothing else."""

from __future__ import annotations

import argparse
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


def _common(p: argparse.ArgumentParser, *, hosts_flag: str = "--hosts") -> None:
    p.add_argument(
        "-i",
        "--inventory",
        default=default_inventory(),
        help="inventory folder or file (default: $FLEET_INVENTORY, ./inventories/local, or this machine)",
    )
    p.add_argument(
        hosts_flag,
        "-l" if hosts_flag == "--limit" else "-H",
        dest="pattern",
        default=None,
        help="host pattern: names, globs (gh200-*), groups, a,b  !excluded  &intersection",
    )
    p.add_argument(
        "--strict-hosts",
        action="store_true",
        default=os.environ.get("FLEET_STRICT_HOSTS", "") not in ("", "0"),
        help="a host pattern element that matches nothing is an error (default: a warning; env FLEET_STRICT_HOSTS=1)",
    )
    p.add_argument("-f", "--forks", type=int, default=32, help="hosts worked on at once (default 32)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
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
    parser = Parser(prog="fleet", description="Fleet automation for GPU training clusters.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    run = sub.add_parser("run", help="converge hosts with a playbook (YAML or Python)")
    run.add_argument("playbook")
    _common(run, hosts_flag="--limit")
    run.add_argument("-C", "--check", action="store_true", help="change nothing; report what would change")
    run.add_argument("-D", "--diff", action="store_true", help="show what changes in files and packages")
    run.add_argument("-t", "--tags", default="", help="only tasks with these tags (comma list)")
    run.add_argument("--skip-tags", default="", help="skip tasks with these tags")
    run.add_argument(
        "--no-batch", action="store_true", help="send each probe on its own, not batched (slower; for debugging)"
    )
    run.add_argument("--no-lock", action="store_true", help="do not take the per-host run lock (experts only)")
    run.add_argument("--lock-wait", type=float, default=60.0, metavar="S", help="wait for another run's lock (60)")
    run.set_defaults(handler=cmd_run)

    facts = sub.add_parser("facts", help="arch, OS, driver, CUDA, GPUs and training stack per host")
    _common(facts)
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


def cmd_run(args: argparse.Namespace) -> int:
    from .playbook import check_tags, load_playbook
    from .report import choose_reporter
    from .resources import find
    from .runner import run_playbook

    inventory = load_inventory_arg(args.inventory, args.strict_hosts)
    playbook = load_playbook(find(args.playbook))  # ./playbooks/... first, else the shipped copy
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
    report = run_playbook(playbook, inventory, options, choose_reporter(json_lines=args.json), limit=args.pattern)
    return report.exit_code


def cmd_facts(args: argparse.Namespace) -> int:
    from .factsview import show_facts

    inventory = load_inventory_arg(args.inventory, args.strict_hosts)
    return show_facts(inventory, inventory.require(args.pattern), run_options(args), as_json=args.json)


def cmd_health(args: argparse.Namespace) -> int:
    from .healthview import show_health

    inventory = load_inventory_arg(args.inventory, args.strict_hosts)
    return show_health(inventory, inventory.require(args.pattern), run_options(args), as_json=args.json)


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
    from .report import print_table
    from .secrets import Redactor, inventory_marked_names, marked_names, secret_values

    inventory = load_inventory_arg(args.inventory, args.strict_hosts)
    hosts = [inventory.host(h) for h in inventory.require(args.pattern)]
    extra = parse_extra_vars(args.extra_vars)
    names = inventory_marked_names(inventory) | marked_names(extra)
    redactor = Redactor(secret_values(extra, *(h.vars for h in hosts), marked=names), names)
    if args.json:
        data = {h.name: {"groups": h.groups, "vars": {**h.vars, **extra}} for h in hosts}
        print(json.dumps(redactor.show(data), indent=2, default=str))
        return 0
    rows = [(h.name, ",".join(h.groups), json.dumps(redactor.show({**h.vars, **extra}), default=str)) for h in hosts]
    print_table(rows, ("host", "groups", "vars"), title=f"{len(hosts)} host(s) in {inventory.source}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except FleetError as exc:
        print(f"fleet: error: {visible(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("fleet: interrupted", file=sys.stderr)
        return 130
    finally:
        if argv is None:  # the process ends next (the console script, python -m fleet.cli)
            # Spare the interpreter's final garbage collection a walk over every object left:
            # exit frees them anyway, and the walk cost ~0.25 s of CPU on a one-host run.
            gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
