"""`apt`: Debian/Ubuntu packages, probed from dpkg's database; only the missing ones are installed."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from ..model import CommandResult, Plan
from ..probe import Probe
from ..shell import join, quote, run_once
from ..task import Action, Args, Context, action


class AptArgs(Args):
    packages: list[str]
    state: Literal["present", "absent"] = "present"
    update_cache: bool = True


def installed(dpkg_output: str) -> set[str]:
    """Names dpkg-query reports as fully installed (`name<TAB>install ok installed`)."""
    names = set()
    for line in dpkg_output.splitlines():
        name, _, status = line.partition("\t")
        if status.strip() == "install ok installed":
            names.add(name.split(":")[0])
    return names


def _installed(result: CommandResult) -> set[str]:
    return installed(result.stdout)


_PLAIN_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]*")  # Debian policy's package names: no arch, version or glob
# Pairs each `Package:` line grep found (in $_g) with its record's `Status:` line, printed as
# dpkg-query prints them. dpkg writes Status at most three lines after Package (after Essential
# and Protected); a record where it is not there leaves _ok empty, and dpkg-query answers. Read
# from a here-document in this shell: no subshell, no pipe.
_PAIR_STATUS = (
    "_p=; _out=; _ok=1\n"
    "while IFS= read -r _l; do\n"
    "  case $_l in\n"
    '    "Package: "*) [ -z "$_p" ] || { _ok=; break; }; _p=${_l#Package: };;\n'
    '    "Status: "*) [ -z "$_p" ] || _out="$_out$_p\t${_l#Status: }\n"; _p=;;\n'
    '    ""|--) [ -z "$_p" ] || { _ok=; break; };;\n'
    "  esac\n"
    "done <<EOF\n"
    "$_g\n"
    "EOF\n"
    '[ -z "$_p" ] || _ok=\n'
)


def packages_script(packages: list[str], admindir: str = "/var/lib/dpkg") -> str:
    """What dpkg-query -W says of the packages (name<TAB>status lines). dpkg-query costs the host
    ~6 ms of CPU to load its database; one `grep -F` over the status file ~1 ms (awk took 10 ms
    over a 5 MB one, a GPU node's size). grep is used only where it reads what dpkg-query would:
    plain names, DPKG_ADMINDIR unset and no pending journal in updates/ (an interrupted dpkg run,
    which dpkg-query would apply first)."""
    words = " ".join(quote(p) for p in packages)
    admin = quote(admindir)
    option = "" if admindir == "/var/lib/dpkg" else f" --admindir={admin}"
    query = f"dpkg-query{option} -W -f='${{Package}}\\t${{Status}}\\n' {words} 2>/dev/null; true"
    if not all(_PLAIN_NAME.fullmatch(p) for p in packages):
        return query
    patterns = " ".join(f"-e {quote('Package: ' + p)}" for p in packages)
    body = (
        f'if [ -z "${{DPKG_ADMINDIR-}}" ] && [ -r {admin}/status ] && command -v grep >/dev/null; then\n'
        f'  for _f in {admin}/updates/[0-9]*; do [ -e "$_f" ] && {{ {query}; return; }}; done\n'
        f"  _g=$(grep -A3 -xF {patterns} {admin}/status)\n"
        "  if [ $? -le 1 ]; then  # 1: none of them; 2: grep could not read it, dpkg-query answers\n"
        f"{_PAIR_STATUS}"
        '    [ -n "$_ok" ] && { printf %s "$_out"; return; }\n'
        "  fi\n"
        "fi\n"
        f"{query}"
    )
    return run_once("_fleet_dpkg", body, "_f _g _p _out _ok _l")  # a batch runs it without a subshell


@action
class Apt(Action):
    name = "apt"
    Args: ClassVar = AptArgs

    def probe(self) -> Probe[set[str]]:
        return Probe(packages_script(self.args.packages), _installed, inline=True)

    def plan(self, have: set[str], ctx: Context) -> Plan:
        wanted = [p.split("=")[0] for p in self.args.packages]
        if self.args.state == "present":
            todo = [p for p, name in zip(self.args.packages, wanted, strict=True) if name not in have]
            if not todo:
                return Plan(summary=f"{len(wanted)} package(s) installed")
            update = "apt-get update -qq && " if self.args.update_cache else ""
            script = (
                "export DEBIAN_FRONTEND=noninteractive; "
                f"{update}{join(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', *todo])}\n"
            )
            return Plan(script=script, summary=f"install {', '.join(todo)}", diff="".join(f"+ {p}\n" for p in todo))
        todo = [name for name in wanted if name in have]
        if not todo:
            return Plan(summary=f"{len(wanted)} package(s) absent")
        script = f"export DEBIAN_FRONTEND=noninteractive; {join(['apt-get', 'remove', '-y', '-qq', *todo])}\n"
        return Plan(script=script, summary=f"remove {', '.join(todo)}", diff="".join(f"- {p}\n" for p in todo))
