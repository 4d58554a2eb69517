"""A TCP relay that adds latency and a per-connection bandwidth cap: the benchmarks' model of a WAN path.

    python -m benchmarks.delay_relay LISTEN_HOST:PORT TARGET_HOST:PORT --one-way-ms 15 --per-connection 16777216

Every byte is forwarded `--one-way-ms` after it arrived (so a request and its answer see twice that:
the round trip), and each connection, in each direction, sends at most `--per-connection` bytes per
second (what one TCP stream gets from S3 over a long path). The link's total capacity is capped
separately, with `tc`, on the network namespace's veth (`benchmarks/netshape.py`). It prints
`ready` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

CHUNK = 64 * 1024


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, rate: float) -> None:
    queue: asyncio.Queue = asyncio.Queue(maxsize=64)

    async def receive() -> None:
        while data := await reader.read(CHUNK):
            await queue.put((time.monotonic() + delay, data))
        await queue.put((time.monotonic() + delay, b""))

    async def send() -> None:
        free_at = 0.0
        while True:
            due, data = await queue.get()
            send_at = max(due, free_at)
            wait = send_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
            free_at = send_at + len(data) / rate

    receiving = asyncio.ensure_future(receive())
    try:
        await send()
    finally:
        receiving.cancel()


async def _serve(listen: tuple[str, int], target: tuple[str, int], delay: float, rate: float) -> None:
    async def handle(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                _pump(client_reader, upstream_writer, delay, rate), _pump(upstream_reader, client_writer, delay, rate)
            )
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                writer.close()

    server = await asyncio.start_server(handle, *listen, backlog=256)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("listen")
    parser.add_argument("target")
    parser.add_argument("--one-way-ms", type=float, default=15.0)
    parser.add_argument("--per-connection", type=float, default=16 * 1024 * 1024, help="bytes per second")
    args = parser.parse_args(argv)
    asyncio.run(_serve(_address(args.listen), _address(args.target), args.one_way_ms / 1000, args.per_connection))
    return 0


if __name__ == "__main__":
    sys.exit(main())
