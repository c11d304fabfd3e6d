"""JSON on the wire is UTF-8 (RFC 8259). Bodies in any other encoding are refused before any
parsing: Python's JSON parser would otherwise detect UTF-16 or UTF-32 (or skip a UTF-8 byte order
mark) on its own and accept a body the strict, UTF-8-only checks never saw.
"""

from __future__ import annotations

from collections.abc import Collection

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32BE"),
    (b"\xff\xfe\x00\x00", "UTF-32LE"),
    (b"\xfe\xff", "UTF-16BE"),
    (b"\xff\xfe", "UTF-16LE"),
    (b"\xef\xbb\xbf", "UTF-8 with a byte order mark"),
)


def encoding_problem(body: bytes, content_type: str) -> tuple[int, str] | None:
    """(status, detail) when `body` is not plain UTF-8 text, or its media type names another
    charset; None when it is fine."""
    _, _, parameters = content_type.partition(";")
    for parameter in parameters.split(";"):
        name, _, value = parameter.strip().partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            return 415, f"request bodies must be UTF-8 (RFC 8259), not charset={charset}"
    for mark, name in _BOMS:
        if body.startswith(mark):
            return 415, f"request bodies must be UTF-8 without a byte order mark, not {name}"
    # JSON text starts with ASCII; a NUL among the first four bytes is UTF-16 or UTF-32.
    if b"\x00" in body[:4]:
        return 415, "request bodies must be UTF-8 (RFC 8259); this one looks like UTF-16 or UTF-32"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        return 400, f"the request body is not valid UTF-8 (byte {error.start}): {error.reason}"
    return None


class Utf8Bodies:
    """ASGI middleware: a request body that is not UTF-8 gets 415 (another encoding) or 400
    (invalid bytes) as a problem document, and the app never sees it. Bodies of the media types
    in `binary_types` pass untouched. A compressed body passes only to `decompressing_paths`,
    whose route checks what it decompresses with `encoding_problem`; anywhere else it gets 415.
    Place it inside the body size limit, which bounds what it buffers."""

    def __init__(
        self, app: ASGIApp, binary_types: Collection[str] = (),
        decompressing_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self.binary_types = frozenset(binary_types)
        self.decompressing_paths = frozenset(decompressing_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        content_type = ""
        encoding = ""
        for name, value in scope.get("headers", ()):
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-encoding":
                encoding = value.decode("latin-1").strip().lower()
        if encoding not in ("", "identity"):
            # Only a route that decompresses may take a compressed body, and it checks what it
            # decompresses; elsewhere the parser would read the bytes as they are.
            if scope["path"] in self.decompressing_paths:
                await self.app(scope, receive, send)
            else:
                await _refuse(send, 415, f"request bodies here are not compressed "
                                         f"(Content-Encoding: {encoding})")
            return
        if content_type.partition(";")[0].strip().lower() in self.binary_types:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = encoding_problem(body, content_type)
        if problem is not None:
            await _refuse(send, *problem)
            return
        buffered: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([buffered], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replaying() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replaying


async def _refuse(send: Send, status: int, detail: str) -> None:
    title = "Unsupported media type" if status == 415 else "Bad request"
    body = orjson.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
        ],
    })
    await send({"type": "http.response.body", "body": body})
