"""Reading a request body: decompression as it streams in, whatever the chunk boundaries, with
the limit on the decompressed bytes."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Callable

import pytest

from services.ingest.body import read_body
from services.ingest.errors import IngestError

DATA = b'{"batch": [' + b'{"type": "page", "userId": "u"},' * 200 + b"{}]}"


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


async def stream(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def read(body: bytes, encoding: str, size: int, limit: int = 500 * 1024) -> bytes:
    return asyncio.run(read_body(stream(body, size), encoding, "", limit))


PACKERS: dict[str, tuple[str, Callable[[bytes], bytes]]] = {
    "gzip": ("gzip", gzip.compress),
    "x-gzip": ("x-gzip", gzip.compress),
    "zlib": ("deflate", zlib.compress),
    "raw": ("deflate", raw_deflate),
    "identity": ("", lambda data: data),
}


@pytest.mark.parametrize("packer", sorted(PACKERS))
@pytest.mark.parametrize("size", [1, 2, 7, 4096, 1 << 20])
def test_any_chunking_gives_the_same_bytes(packer: str, size: int) -> None:
    encoding, pack = PACKERS[packer]
    assert read(pack(DATA), encoding, size) == DATA


@pytest.mark.parametrize("packer", sorted(PACKERS))
def test_limit_counts_decompressed_bytes(packer: str) -> None:
    encoding, pack = PACKERS[packer]
    assert read(pack(DATA), encoding, 512, limit=len(DATA)) == DATA  # exactly at the limit
    with pytest.raises(IngestError) as refused:
        read(pack(DATA), encoding, 512, limit=len(DATA) - 1)
    assert (refused.value.status_code, refused.value.code) == (413, "payload_too_large")


def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    never = stream(b"", 1)
    with pytest.raises(IngestError) as refused:
        asyncio.run(read_body(never, "", str(1024 * 1024), 500 * 1024))
    assert refused.value.status_code == 413


def test_gzip_members_one_after_another_are_one_body() -> None:
    """RFC 1952: a gzip file may be several members; a deflate stream is one."""
    half = len(DATA) // 2
    assert read(gzip.compress(DATA[:half]) + gzip.compress(DATA[half:]), "gzip", 5) == DATA
    with pytest.raises(IngestError):
        read(zlib.compress(DATA) + zlib.compress(DATA), "deflate", 5)


def test_corrupt_streams_are_bad_compression() -> None:
    packed = gzip.compress(DATA)
    for body in (packed[:-1], packed + b"junk", b"\x1f\x8b" + b"\x00" * 40, b"", DATA):
        with pytest.raises(IngestError) as refused:
            read(body, "gzip", 64)
        assert (refused.value.status_code, refused.value.code) == (400, "bad_compression")
    with pytest.raises(IngestError) as refused:
        read(zlib.compress(DATA)[:-3], "deflate", 64)
    assert refused.value.code == "bad_compression"
