"""The fallback HTTP load generator, for when `wrk` is not installed: asyncio over raw
sockets (uvloop when installed), keep-alive connections spread over a few processes.

It takes CPU from the server it measures (Python parsing HTTP is not free), so its
figures are lower bounds; the bench labels them as such and shows its ceiling.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from revenipe.bench.pool import WorkerPool

START_DELAY_S = 0.1


@dataclass(frozen=True)
class Target:
    port: int
    method: str
    path: str
    """For a track: the path with `{customer}` in it."""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    customers: tuple[str, ...] = ()
    key_prefix: str | None = None
    """When set, each request carries `Idempotency-Key: <prefix>-<n>`."""


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    """CPU time the generator's processes spent over the measured window."""


def _request(target: Target, n: int) -> bytes:
    path = target.path
    if target.customers:
        path = path.format(customer=target.customers[n % len(target.customers)])
    lines = [f"{target.method} {path} HTTP/1.1", f"Host: 127.0.0.1:{target.port}"]
    lines += [f"{name}: {value}" for name, value in target.headers]
    if target.key_prefix is not None:
        lines.append(f"Idempotency-Key: {target.key_prefix}-{n}")
    if target.body or target.method != "GET":
        lines.append(f"Content-Length: {len(target.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + target.body


async def _connection(
    target: Target, first: int, step: int, deadline: float, result: LoadResult
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    clock = time.perf_counter
    n = first
    try:
        while time.monotonic() < deadline:
            begin = clock()
            writer.write(_request(target, n))
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            if head[9:10] == b"2":
                result.latencies.append(clock() - begin)
            else:
                result.errors += 1
            n += step
    finally:
        writer.close()


async def _run(
    target: Target, connections: int, first: int, step: int, start_at: float, seconds: float
) -> LoadResult:
    result = LoadResult()
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    start = time.monotonic()
    cpu = time.process_time()
    deadline = start_at + seconds
    await asyncio.gather(
        *(
            _connection(target, first + i * step, step * connections, deadline, result)
            for i in range(connections)
        )
    )
    result.seconds = time.monotonic() - start
    result.cpu_seconds = time.process_time() - cpu
    return result


def _process(
    target: Target, connections: int, first: int, step: int, start_at: float, seconds: float
) -> LoadResult:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_run(target, connections, first, step, start_at, seconds))


def generate(target: Target, *, processes: int, connections: int, seconds: float) -> LoadResult:
    """Load `target` with `connections` connections over `processes` processes."""
    per_process = max(1, connections // processes)
    with WorkerPool(processes, preload=(__name__,)) as pool:
        pool.wait_ready()
        # Every process starts at the same instant.
        start_at = time.monotonic() + START_DELAY_S
        parts: list[LoadResult] = pool.run_each(
            [
                (_process, (target, per_process, i, processes, start_at, seconds))
                for i in range(processes)
            ]
        )
    combined = LoadResult()
    for part in parts:
        combined.latencies += part.latencies
        combined.errors += part.errors
        combined.seconds = max(combined.seconds, part.seconds)
        combined.cpu_seconds += part.cpu_seconds
    return combined
