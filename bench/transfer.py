"""Data-size benchmarks of the connection layer: large uploads and large command output.

    sudo python bench/transfer.py                      # 50 MB copy to 10 hosts; 200 MB printed on 5 hosts
    sudo python bench/transfer.py --copy-mb 5 --copy-hosts 2 --print-mb 20 --print-hosts 2   # quick

Starts real sshd hosts on loopback (tests/sshfleet.py) and runs the `fleet` CLI as a user would:
1. `copy` of one N MB file (src: streamed from the controller's disk) to every host: the
   aggregate MB/s (size x hosts / wall time of the whole CLI process) and the controller's peak RSS;
   every host's copy is checked against the source's sha256 before the figure counts;
2. a `shell` task printing N MB on every host: the controller's peak RSS (output kept in memory
   is capped per command; the rest is dropped and counted, never buffered whole).
Targets (issue 11): >= 50 MB/s aggregate, < 150 MB peak RSS. Prints one line per measure and,
with --out, writes them as a markdown table. Figures, never assertions: this is not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from measure import run_measured  # noqa: E402


def load_sshfleet():
    spec = importlib.util.spec_from_file_location("sshfleet", REPO / "tests" / "sshfleet.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["sshfleet"] = module
    spec.loader.exec_module(module)
    return module


def fleet_run(book: Path, inventory: Path, logs: Path, forks: int):
    argv = [sys.executable, "-m", "fleet.cli", "run", str(book), "-i", str(inventory), "--forks", str(forks)]
    measured = run_measured(argv, cwd=REPO, env=dict(os.environ), logs=logs, timeout=1800)
    if measured.exit_code != 0:
        raise SystemExit(f"bench: fleet failed ({measured.exit_code}): {measured.stdout[-2000:]}{measured.stderr}")
    return measured


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def bench_copy(fleet, root: Path, size_mb: int, hosts: int) -> dict:
    source = root / "big.bin"
    with source.open("wb") as fh:  # incompressible, written in pieces
        for _ in range(size_mb):
            fh.write(os.urandom(1 << 20))
    names = ",".join(h.name for h in fleet.hosts[:hosts])
    task = {"copy": {"src": str(source), "dest": "~/big.bin"}}
    book = root / "copy.yaml"
    book.write_text(yaml.safe_dump([{"hosts": names, "gather_facts": False, "tasks": [task]}]))
    for host in fleet.hosts:
        (host.home / "big.bin").unlink(missing_ok=True)
    measured = fleet_run(book, fleet.inventory(root / "inv-copy"), root / "logs-copy", forks=hosts)
    want = sha256_of(source)
    for host in fleet.hosts[:hosts]:
        got = sha256_of(host.home / "big.bin")
        if got != want:
            raise SystemExit(f"bench: {host.name} got a different file ({got} != {want})")
    return {
        "measure": f"copy {size_mb} MB to {hosts} hosts",
        "seconds": measured.seconds,
        "mb_per_s": size_mb * hosts / measured.seconds,
        "peak_rss_mb": measured.tree_rss_kib / 1024,
    }


def bench_print(fleet, root: Path, size_mb: int, hosts: int) -> dict:
    book = root / "print.yaml"
    names = ",".join(h.name for h in fleet.hosts[:hosts])
    task = {"shell": f"head -c {size_mb * 1024 * 1024} /dev/zero | tr '\\0' x", "changed_when": False}
    book.write_text(yaml.safe_dump([{"hosts": names, "gather_facts": False, "tasks": [task]}]))
    inventory = fleet.inventory(root / "inv-print")
    measured = fleet_run(book, inventory, root / "logs-print", forks=hosts)
    return {
        "measure": f"command printing {size_mb} MB on {hosts} hosts",
        "seconds": measured.seconds,
        "mb_per_s": size_mb * hosts / measured.seconds,
        "peak_rss_mb": measured.tree_rss_kib / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copy-mb", type=int, default=50)
    parser.add_argument("--copy-hosts", type=int, default=10)
    parser.add_argument("--print-mb", type=int, default=200)
    parser.add_argument("--print-hosts", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the figures as a markdown table here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (it creates the hosts' login users)")
    sshfleet = load_sshfleet()
    root = Path(tempfile.mkdtemp(prefix="fleet-transfer-", dir="/tmp"))
    root.chmod(0o755)  # the hosts' users read their authorized keys below it
    fleet = sshfleet.SSHFleet(root / "fleet", max(args.copy_hosts, args.print_hosts), prefix="xfer")
    rows = []
    try:
        fleet.start()
        for measure in (
            lambda: bench_copy(fleet, root, args.copy_mb, args.copy_hosts),
            lambda: bench_print(fleet, root, args.print_mb, args.print_hosts),
        ):
            row = measure()
            rows.append(row)
            print(
                f"{row['measure']:<36} {row['seconds']:7.2f} s  {row['mb_per_s']:7.1f} MB/s  "
                f"peak RSS {row['peak_rss_mb']:6.1f} MB",
                flush=True,
            )
    finally:
        fleet.stop()
        fleet.remove_users()
        shutil.rmtree(root, ignore_errors=True)
    if args.out:
        lines = ["| measure | wall | aggregate MB/s | controller peak RSS |", "|---|---|---|---|"]
        lines += [
            f"| {r['measure']} | {r['seconds']:.2f} s | {r['mb_per_s']:.1f} | {r['peak_rss_mb']:.1f} MB |" for r in rows
        ]
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
