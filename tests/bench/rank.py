"""The rank API at a fixed offered rate, beside a bare endpoint.

Open loop: requests are due at fixed intervals (`rate` a second) whatever the answers, each on a
keep-alive connection free at that moment (a new one when none is), and latency is measured from
when the request was due, so a slow answer delays nothing but is counted in full (no coordinated
omission). A small HTTP/1.1 client over asyncio streams keeps the client's own cost low.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

FACTORS = ("price", "quality", "speed", "locality")


def rank_body(rng: random.Random) -> bytes:
    count = rng.randint(5, 20)
    return orjson.dumps({
        "customer": {"id": f"customer-{rng.randrange(2_000)}"},
        "candidates": [{"item_id": f"item-{i}", "scores": {f: round(rng.random(), 3)
                                                            for f in FACTORS}}
                       for i in range(count)],
    })


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes,
                   body: bytes) -> int:
    writer.write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def offered_rate(url: str, headers: dict[str, str], *, rate: float,
                       seconds: float, seed: int = 7) -> dict[str, Any]:
    """p50/p99 of POSTs of rank requests offered at `rate` a second for `seconds`."""
    target = urlsplit(url)
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = (f"POST {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n{extra}"
            "Content-Type: application/json\r\n").encode()
    rng = random.Random(seed)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    latencies: list[float] = []
    errors = 0
    connections = 0

    async def one(due: float, body: bytes) -> None:
        nonlocal errors, connections
        if idle:
            reader, writer = idle.pop()
        else:
            reader, writer = await asyncio.open_connection(target.hostname, target.port)
            connections += 1
        try:
            status = await _request(reader, writer, head, body)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            errors += 1
            writer.close()
            return
        latencies.append(time.perf_counter() - due)
        if status != 200:
            errors += 1
        idle.append((reader, writer))

    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    total = int(rate * seconds)
    for index in range(total):
        due = started + index / rate
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(due, rank_body(rng))))
    await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()
    return {
        "offered_per_second": rate,
        "requests": total,
        "p50_ms": round(1000 * _percentile(latencies, 0.5), 2) if latencies else None,
        "p99_ms": round(1000 * _percentile(latencies, 0.99), 2) if latencies else None,
        "errors": errors,
        "connections": connections,
    }
