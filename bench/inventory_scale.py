"""How long fleet takes to load a large inventory and select a pattern from it (issue: 100,000
hosts never finished loading; target < 3 s). Optionally ansible-core on the same files.

    python bench/inventory_scale.py --hosts 100000 [--ansible]

Writes an INI and a YAML inventory of N hosts in racks of 100 (group per rack, a parent group per
100 racks, group_vars), then times load + `select` of a few patterns, best of --repeat runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fleet.inventory import load_inventory

PATTERNS = ("all", "rack0042", "gh-00000[10:20]", "row03:&rack03*:!gh-0003050", "~gh-00001[0-9]{2}", "rack0007[-1]")


def write_inventories(root: Path, hosts: int) -> dict[str, Path]:
    racks = (hosts + 99) // 100
    ini = [f"[rack{r:04d}]\ngh-{r * 100:07d}\n" + "".join(f"gh-{h:07d} slot={h % 4}\n" for h in
           range(r * 100 + 1, min(hosts, r * 100 + 100))) for r in range(racks)]  # fmt: skip
    rows = [f"[row{w:02d}:children]\n" + "".join(f"rack{r:04d}\n" for r in range(w * 100, min(racks, w * 100 + 100)))
            for w in range((racks + 99) // 100)]  # fmt: skip
    (root / "ini").mkdir()
    (root / "ini" / "hosts").write_text("\n".join(ini + rows) + "\n[all:vars]\nntp=pool\n")
    (root / "ini" / "group_vars").mkdir()
    (root / "ini" / "group_vars" / "rack0001.yml").write_text("cuda: '12.8'\n")
    files = {"ini": root / "ini" / "hosts"}
    for kind, host_vars in (("yaml", "{{slot: {}}}"), ("yaml, no host vars", "")):
        lines = ["all:", "  children:"]
        for r in range(racks):
            lines += [f"    rack{r:04d}:", "      hosts:"]
            lines += [
                f"        gh-{h:07d}: {host_vars.format(h % 4)}" for h in range(r * 100, min(hosts, r * 100 + 100))
            ]
        folder = root / kind.replace(", ", "-").replace(" ", "-")
        folder.mkdir()
        (folder / "hosts.yml").write_text("\n".join(lines) + "\n")
        files[kind] = folder / "hosts.yml"
    return files


def time_fleet(path: Path) -> tuple[float, float, float, int]:
    started, cpu = time.perf_counter(), time.process_time()
    inv = load_inventory(path, warn=lambda _: None)
    loaded = time.perf_counter()
    count = sum(len(inv.select(p)) for p in PATTERNS)
    inv.host(inv.hosts[-1])  # one host's merged variables
    return loaded - started, time.perf_counter() - loaded, time.process_time() - cpu, count


def time_ansible(path: Path) -> tuple[float, float, float, int]:
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    started, cpu = time.perf_counter(), time.process_time()
    inv = InventoryManager(loader=DataLoader(), sources=[str(path)])
    loaded = time.perf_counter()
    count = sum(len(inv.get_hosts(p)) for p in PATTERNS)
    return loaded - started, time.perf_counter() - loaded, time.process_time() - cpu, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ansible", action="store_true", help="also time ansible-core (installed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = write_inventories(Path(tmp), args.hosts)
        print(f"| tool | format | hosts | load s | {len(PATTERNS)} patterns s | total s | CPU s | selected |")
        print("|---|---|---|---|---|---|---|---|")
        tools = [("fleet", time_fleet)] + ([("ansible-core", time_ansible)] if args.ansible else [])
        for tool, timer in tools:
            for kind, path in files.items():
                runs = [timer(path) for _ in range(args.repeat if tool == "fleet" else 1)]
                load, select, cpu, count = min(runs, key=lambda r: r[0] + r[1])
                print(f"| {tool} | {kind} | {args.hosts} | {load:.2f} | {select:.2f} | {load + select:.2f} | {cpu:.2f} "
                      f"| {count} |")  # fmt: skip


if __name__ == "__main__":
    main()
