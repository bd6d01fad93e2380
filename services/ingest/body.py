"""Reads a request body under the size limit, decompressing `Content-Encoding: gzip`/`deflate` as
it streams in, so the limit holds for the decompressed bytes and a gzip bomb stops at it."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from services.ingest.errors import IngestError

ENCODINGS = ("identity", "gzip", "x-gzip", "deflate")
# Deflate grows incompressible data by a few bytes per 16 KB block, and a gzip member's header
# may carry a name or comment: compressed bytes past twice the limit are never a valid body.
COMPRESSED_SLACK = 2
GZIP_WBITS = 16 + zlib.MAX_WBITS


def too_large(limit: int) -> IngestError:
    return IngestError(
        413, "payload_too_large", f"request body exceeds the {limit // 1024} KB limit"
    )


def _bad_stream(encoding: str) -> IngestError:
    name = "gzip" if "gzip" in encoding else "deflate"
    return IngestError(400, "bad_compression", f"body is not valid {name} data")


def _looks_like_zlib(first: bytes) -> bool:
    """A zlib header (RFC 1950): HTTP's `deflate`; without it, the raw deflate some clients send."""
    return len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0


class _Inflater:
    """Decompresses one body chunk by chunk; never holds more than `limit` + 1 output bytes."""

    def __init__(self, encoding: str, limit: int) -> None:
        self._encoding = encoding
        self._limit = limit
        self._size = 0
        self._decompressor: zlib._Decompress | None = None
        self._wbits = GZIP_WBITS  # deflate's are known from its first two bytes
        self._head = b""

    def feed(self, chunk: bytes) -> bytes:
        if self._decompressor is None:
            self._head += chunk
            if self._encoding == "deflate" and len(self._head) < 2:
                return b""
            if self._encoding == "deflate":
                raw = not _looks_like_zlib(self._head)
                self._wbits = -zlib.MAX_WBITS if raw else zlib.MAX_WBITS
            self._decompressor = zlib.decompressobj(self._wbits)
            chunk, self._head = self._head, b""
        out = []
        data = chunk
        try:
            while data:
                if self._decompressor.eof:  # bytes after the end of the stream
                    if self._wbits != GZIP_WBITS:
                        raise _bad_stream(self._encoding)
                    self._decompressor = zlib.decompressobj(GZIP_WBITS)  # gzip's next member
                piece = self._decompressor.decompress(data, self._limit - self._size + 1)
                self._size += len(piece)
                if self._size > self._limit:
                    raise too_large(self._limit)
                out.append(piece)
                data = self._decompressor.unconsumed_tail or self._decompressor.unused_data
        except zlib.error:
            raise _bad_stream(self._encoding) from None
        return b"".join(out)

    def finish(self) -> None:
        if self._decompressor is None or not self._decompressor.eof:  # empty or cut short
            raise _bad_stream(self._encoding)


async def read_body(
    stream: AsyncIterator[bytes], encoding_header: str, length_header: str, limit: int
) -> bytes:
    """The (decompressed) body, refused with 413 as soon as it passes `limit` bytes, 415 for an
    encoding other than gzip or deflate, 400 for a corrupt compressed stream."""
    encoding = encoding_header.strip().lower() or "identity"
    if encoding not in ENCODINGS:
        raise IngestError(
            415,
            "unsupported_encoding",
            f"Content-Encoding {encoding_header.strip()!r} is not supported; "
            "send gzip, deflate or an uncompressed body",
        )
    inflater = None if encoding == "identity" else _Inflater(encoding, limit)
    raw_limit = limit if inflater is None else limit * COMPRESSED_SLACK
    if length_header.isdigit() and int(length_header) > raw_limit:
        raise too_large(limit)
    chunks, raw_size, size = [], 0, 0
    async for chunk in stream:
        raw_size += len(chunk)
        if raw_size > raw_limit:
            raise too_large(limit)
        if inflater is not None:
            chunk = inflater.feed(chunk)
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    if inflater is not None:
        inflater.finish()
    return b"".join(chunks)
