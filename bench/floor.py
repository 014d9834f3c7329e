"""The raw paramiko floor: what any Python tool over SSH must at least spend on the same hosts.

    python bench/floor.py HOSTS.json --commands 12 [--facts]
    python bench/floor.py HOSTS.json --requests REQUESTS.json

Connects to every host in parallel (one thread each, strict host keys, and fleet's transport
settings: TCP_NODELAY, AES-GCM preferred), runs `--commands` commands one after another on each
(each a new session: channel open, exec, EOF, exit status), or the facts script once with
`--facts`, and prints one line per host: `host <name> ok commands <n> arch <arch>`. The harness
times the whole process, interpreter start included, exactly as it times the tools.

`--requests` sends each host one given command line with its given stdin (the harness captures
fleet's own first request of a converged run: the facts and every probe, framed as fleet frames
it): the same host work as fleet's, without fleet's engine around it."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko

FACTS = "uname -m; hostname; uname -r; cat /etc/os-release; nproc; grep MemTotal /proc/meminfo; df -Pk ~ | tail -n1"


class Transport(paramiko.Transport):
    """AES-GCM first, as fleet asks (fleet/connection.py): the floor gets every saving fleet's
    own transport settings give, so a ratio to it measures only fleet's engine and host work."""

    _preferred_ciphers = (
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        *(c for c in paramiko.Transport._preferred_ciphers if "gcm" not in c),
    )


def run_host(host: dict, key: str, known_hosts: str, commands: int, facts: bool, request: dict | None) -> str:
    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        host["address"], port=host["port"], username=host["user"], key_filename=key,
        allow_agent=False, look_for_keys=False, timeout=30, transport_factory=Transport,
    )  # fmt: skip
    transport = client.get_transport()
    assert transport is not None
    transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    arch = ""
    if request is not None:
        chan = transport.open_session()
        chan.exec_command(request["command"])
        chan.sendall(request["stdin"].encode())
        chan.shutdown_write()
        out = chan.makefile("rb").read().decode()
        chan.makefile_stderr("rb").read()
        if chan.recv_exit_status() != 0 or "\n@@arch\n" not in out:
            raise SystemExit(f"floor: the request failed on {host['name']}")
        client.close()
        return f"host {host['name']} ok commands 1 arch {out.split(chr(10) + '@@arch' + chr(10), 1)[1].split()[0]}"
    for _ in range(1 if facts else commands):
        _, out, _ = client.exec_command(FACTS if facts else "true")
        text = out.read().decode()
        if out.channel.recv_exit_status() != 0:
            raise SystemExit(f"floor: a command failed on {host['name']}")
        arch = text.split("\n", 1)[0]
    client.close()
    return f"host {host['name']} ok commands {1 if facts else commands} arch {arch or '-'}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("hosts", help="JSON: {key, known_hosts, hosts: [{name, address, port, user}]}")
    p.add_argument("--commands", type=int, default=1)
    p.add_argument("--facts", action="store_true", help="run one facts script per host instead")
    p.add_argument("--requests", help="JSON: {host name: {command, stdin}}, one request per host instead")
    args = p.parse_args()
    spec = json.loads(Path(args.hosts).read_text())
    hosts = spec["hosts"]
    requests = json.loads(Path(args.requests).read_text()) if args.requests else {}
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:

        def one(host: dict) -> str:
            request = requests.get(host["name"]) if requests else None
            return run_host(host, spec["key"], spec["known_hosts"], args.commands, args.facts, request)

        lines = pool.map(one, hosts)
        for line in lines:
            print(line)
    return 0


if __name__ == "__main__":
    # Ended as fleet ends its process (fleet.cli.run): no interpreter teardown after the output.
    code = main()
    sys.stdout.flush()
    os._exit(code)
