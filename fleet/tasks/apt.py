"""`apt`: Debian/Ubuntu packages, probed with dpkg-query; only the missing ones are installed."""

from __future__ import annotations

from typing import ClassVar, Literal

from ..model import CommandResult, Plan
from ..probe import Probe
from ..shell import join, quote
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


@action
class Apt(Action):
    name = "apt"
    Args: ClassVar = AptArgs

    def probe(self) -> Probe[set[str]]:
        words = " ".join(quote(p) for p in self.args.packages)
        return Probe(f"dpkg-query -W -f='${{Package}}\\t${{Status}}\\n' {words} 2>/dev/null; true", _installed)

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
