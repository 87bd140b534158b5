"""A bound on the size of a request's head (request line and headers), in uvicorn.

uvicorn's httptools protocol buffers a request's headers whole before the application
sees any of them, with no limit: a client can send a 20 MB header, which costs the
worker seconds of CPU and that much memory. `BoundedHttpToolsProtocol` counts what
arrives while a request's head is incomplete and answers 431 (and closes) once it passes
`MAX_HEAD_BYTES`. `revenipe serve` runs uvicorn with it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = int(os.environ.get("REVENIPE_MAX_HEADER_BYTES") or 64 * 1024)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing heads over MAX_HEAD_BYTES with 431."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._head_done = False
        self._head_tail = b""

    # The count starts again when a message is complete, not when the next one begins:
    # the parser calls `on_message_begin` from inside `data_received`, after the chunk
    # that began the head was counted, and resetting there forgot that chunk (a 100 kB
    # head read as 64 kB + 36 kB was let through).
    def on_headers_complete(self) -> None:
        self._head_done = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._head_bytes = 0
        self._head_done = False
        self._head_tail = b""
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        if not self._head_done:
            self._head_bytes += self._head_part(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse()
                return
        super().data_received(data)

    def _head_part(self, data: bytes) -> int:
        """How many bytes of `data` belong to the head: up to the blank line that ends
        it, when the chunk holds it. A body that arrives in the same read as a small head
        is not head (a 200 kB body sent with its head got 431 instead of 413); the last
        three bytes of the previous chunk are kept so that a blank line split between two
        reads is still found."""
        seen = self._head_tail + data
        end = seen.find(b"\r\n\r\n")
        self._head_tail = seen[-3:]
        if end < 0:
            return len(data)
        return max(0, end + 4 - (len(seen) - len(data)))

    def _refuse(self) -> None:
        body = json.dumps(
            {
                "code": "headers_too_large",
                "message": f"request line and headers are over {MAX_HEAD_BYTES} bytes",
            }
        ).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
