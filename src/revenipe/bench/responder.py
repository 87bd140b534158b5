"""A trivial HTTP responder, to measure the load generator's own ceiling.

`python -m revenipe.bench.responder PORT` answers every request on 127.0.0.1:PORT with a
fixed `200 OK` (keep-alive; requests without a body, as the ceiling run sends), using
raw asyncio protocols (uvloop when installed). It prints `ready` once listening.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
END = b"\r\n\r\n"


class _Responder(asyncio.Protocol):
    def __init__(self) -> None:
        self.pending = b""
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: duck-typed.
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffered = self.pending + data
        complete = buffered.count(END)
        if complete and self.transport is not None:
            self.transport.write(RESPONSE * complete)
            buffered = buffered[buffered.rfind(END) + len(END) :]
        self.pending = buffered


async def _serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Responder, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(int(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
