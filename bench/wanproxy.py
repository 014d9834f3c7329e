"""A user-space WAN: TCP proxies that delay each direction by half a round-trip time.

    python bench/wanproxy.py --rtt-ms 20 LISTEN_ADDR:PORT=TARGET_ADDR:PORT ...

One process serves every pair (asyncio). Every chunk read from one side is written to the other
RTT/2 after it arrived, in order, so a request and its answer cost one RTT more than on loopback,
as between a controller and a rack 20 ms away (kernel netem is not available on these machines).
Bounded: at most MAX_CONNECTIONS at once and MAX_BUFFERED bytes in flight per direction (reading
pauses until the writer catches up). Prints `ready` once every listener is up; stop it by PID
(SIGTERM)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import time

MAX_CONNECTIONS = 2000
MAX_BUFFERED = 4 * 1024 * 1024


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    room = asyncio.Semaphore(max(1, MAX_BUFFERED // 65536))

    async def read() -> None:
        while True:
            await room.acquire()
            data = await reader.read(65536)
            queue.put_nowait((time.monotonic() + delay, data))
            if not data:
                return

    async def write() -> None:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            room.release()
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    # One side failing (a reset) ends both halves here and closes this direction's writer, so the
    # other direction sees its end too; nothing is left pending for the garbage collector to find.
    halves = [asyncio.ensure_future(read()), asyncio.ensure_future(write())]
    try:
        await asyncio.gather(*halves)
    except (ConnectionError, OSError):
        writer.close()
    finally:
        for half in halves:
            half.cancel()
        await asyncio.gather(*halves, return_exceptions=True)


async def serve(listen: tuple[str, int], target: tuple[str, int], delay: float, slots: asyncio.Semaphore) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        async with slots:
            try:
                server_r, server_w = await asyncio.open_connection(*target)
            except OSError:
                client_w.close()
                return
            try:
                for w in (client_w, server_w):
                    with contextlib.suppress(OSError, AttributeError):  # a peer already gone
                        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await asyncio.gather(pump(client_r, server_w, delay), pump(server_r, client_w, delay))
            finally:
                for w in (client_w, server_w):
                    w.close()

    server = await asyncio.start_server(handle, *listen, backlog=512)
    async with server:
        await server.serve_forever()


def endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def main_async(pairs: list[tuple[tuple[str, int], tuple[str, int]]], delay: float) -> None:
    slots = asyncio.Semaphore(MAX_CONNECTIONS)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Nothing to flush: end at once, connections and all (asyncio would list every pending task).
        loop.add_signal_handler(signum, os._exit, 0)
    tasks = [asyncio.create_task(serve(listen, target, delay, slots)) for listen, target in pairs]
    await asyncio.sleep(0.2)
    for task in tasks:
        if task.done():
            task.result()  # a listener that failed to bind: raise its error
    print("ready", flush=True)
    await asyncio.gather(*tasks)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rtt-ms", type=float, required=True)
    p.add_argument("pairs", nargs="+", help="LISTEN_ADDR:PORT=TARGET_ADDR:PORT")
    args = p.parse_args()
    pairs = [(endpoint(a), endpoint(b)) for a, _, b in (x.partition("=") for x in args.pairs)]
    asyncio.run(main_async(pairs, args.rtt_ms / 2000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
