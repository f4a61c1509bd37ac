"""``multipart/related`` (RFC 2387, RFC 2046 §5.1) read and written in chunks: a
STOW-RS body is never held whole in memory, nor is a WADO-RS answer."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse

from cases.imaging.dicomweb.common import CHUNK

_MAX_PART_HEADERS = 16 * 1024


class Unparsable(Exception):
    """The body is not well-formed ``multipart/related``; the text says why."""


class MultipartReader:
    """The parts of a ``multipart/related`` body read from ``stream`` in chunks
    (RFC 2046): for each part its headers and an iterator over its content, which
    must be consumed before the next part is asked for."""

    def __init__(self, stream, boundary: bytes, chunk: int = CHUNK) -> None:
        self.stream = stream
        self.chunk = chunk
        self.delimiter = b"\r\n--" + boundary
        self.buffer = b"\r\n"  # the first delimiter may open the body
        self.eof = False

    def _fill(self) -> bool:
        if self.eof:
            return False
        data = self.stream.read(self.chunk)
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def _find(self, needle: bytes, limit: int | None = None) -> int:
        while True:
            index = self.buffer.find(needle)
            if index >= 0:
                return index
            if limit is not None and len(self.buffer) > limit:
                raise Unparsable("The part headers are too long.")
            if not self._fill():
                raise Unparsable("The multipart body ends too early.")

    def _after_delimiter(self) -> bool:
        """Consume the rest of a delimiter line; False at the closing one."""
        while len(self.buffer) < 2 and self._fill():
            pass
        if self.buffer.startswith(b"--"):
            return False
        end = self._find(b"\r\n", limit=1024)
        if self.buffer[:end].strip(b" \t"):
            raise Unparsable("A boundary line carries unexpected text.")
        self.buffer = self.buffer[end + 2 :]
        return True

    def _content(self) -> Iterator[bytes]:
        keep = len(self.delimiter)
        while True:
            index = self.buffer.find(self.delimiter)
            if index >= 0:
                if index:
                    yield self.buffer[:index]
                self.buffer = self.buffer[index + keep :]
                return
            if len(self.buffer) > keep:
                out = self.buffer[: -keep + 1]
                self.buffer = self.buffer[-keep + 1 :]
                yield out
            if not self._fill():
                raise Unparsable("The multipart body ends inside a part.")

    def parts(self) -> Iterator[tuple[dict[str, str], Iterator[bytes]]]:
        index = self._find(self.delimiter, limit=_MAX_PART_HEADERS)  # preamble
        self.buffer = self.buffer[index + len(self.delimiter) :]
        while self._after_delimiter():
            end = self._find(b"\r\n\r\n", limit=_MAX_PART_HEADERS)
            head = self.buffer[:end].decode("latin-1")
            headers: dict[str, str] = {}
            for line in head.split("\r\n") if head else ():
                name, sep, value = line.partition(":")
                if not sep:
                    raise Unparsable("A part header is malformed.")
                headers[name.strip().lower()] = value.strip()
            self.buffer = self.buffer[end + 4 :]
            content = self._content()
            yield headers, content
            for _ in content:  # whatever the caller left unread
                pass


#: A part of an answer: its Content-Type and how to open its content. Opening is
#: deferred until the part is written, so one file is open at a time.
Part = tuple[str, Callable[[], IO[bytes]]]


def multipart_response(
    request, parts: list[Part], *, type_: str
) -> StreamingHttpResponse:
    """A streamed ``multipart/related; type=...`` answer of ``parts``."""
    boundary = uuid.uuid4().hex
    closing = f"--{boundary}--\r\n".encode()

    def opening(content_type: str) -> bytes:
        return f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()

    def body() -> Iterator[bytes]:
        for content_type, open_part in parts:
            # Opened (and its checksum checked) before its headers go out: a part
            # that cannot be served ends the answer between two parts, unclosed,
            # so no client takes it for complete.
            with open_part() as handle:
                yield opening(content_type)
                while chunk := handle.read(CHUNK):
                    yield chunk
            yield b"\r\n"
        yield closing

    async def abody() -> AsyncIterator[bytes]:
        # Under ASGI a synchronous iterator would be read whole into memory first.
        read = sync_to_async(lambda handle: handle.read(CHUNK), thread_sensitive=False)
        for content_type, open_part in parts:
            handle = await sync_to_async(open_part, thread_sensitive=False)()
            try:
                yield opening(content_type)
                while chunk := await read(handle):
                    yield chunk
            finally:
                handle.close()
            yield b"\r\n"
        yield closing

    return StreamingHttpResponse(
        abody() if isinstance(request, ASGIRequest) else body(),
        content_type=f'multipart/related; type="{type_}"; boundary={boundary}',
    )
