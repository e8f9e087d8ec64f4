"""What a file really holds, for tests that grep a data directory.

ClickHouse writes its column, mark and index files as a stream of compressed blocks
(LZ4 by default, ZSTD where a column asks for it). A byte grep of those files can miss
a stored value, because compression splits it into back-references: a grep that must
first find a secret, or must then find it gone, would pass or fail by chance. So these
helpers yield the decompressed stream of such files, and the raw bytes of the rest.

A block is a 16-byte checksum, then a 9-byte header: the method byte, the compressed
size (header included) and the decompressed size, both little-endian UInt32.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import lz4.block

try:
    from compression import zstd  # Python 3.14+
except ImportError:  # pragma: no cover - depends on the interpreter
    from backports import zstd

CHECKSUM = 16
HEADER = struct.Struct("<BII")
NONE, LZ4, ZSTD, MULTIPLE = 0x02, 0x82, 0x90, 0x91


class NotBlocks(ValueError):
    """The bytes are not a ClickHouse compressed stream."""


def _block(data: bytes) -> bytes:
    """Decompress one block, ``data`` starting at its header."""
    if len(data) < HEADER.size:
        raise NotBlocks("short block")
    method, size, plain = HEADER.unpack_from(data)
    if size != len(data):
        raise NotBlocks("size mismatch")
    body = data[HEADER.size :]
    if method == NONE:
        return body
    if method == LZ4:
        return lz4.block.decompress(body, uncompressed_size=plain)
    if method == ZSTD:
        return zstd.decompress(body)
    if method == MULTIPLE:
        # A count, the methods, then the last codec's block (with its own header),
        # which decompresses to the block of the codec before it, and so on.
        count = body[0]
        inner = body[1 + count :]
        for _ in range(count):
            method = inner[0]
            inner = _block(inner[: HEADER.unpack_from(inner)[1]])
            if method not in (NONE, LZ4, ZSTD):
                break  # a numeric codec's bytes: nothing textual further in
        return inner
    # Delta, DoubleDelta, Gorilla, T64: numbers only; keep the bytes as they are.
    return body


def decompressed(data: bytes) -> bytes:
    """The plain stream of a ClickHouse compressed file, or ``NotBlocks``."""
    out, at = [], 0
    if len(data) < CHECKSUM + HEADER.size:
        raise NotBlocks("too short")
    while at < len(data):
        start = at + CHECKSUM
        if start + HEADER.size > len(data):
            raise NotBlocks("truncated header")
        method, size, _plain = HEADER.unpack_from(data, start)
        if method not in (NONE, LZ4, ZSTD, MULTIPLE) and method < 0x92:
            raise NotBlocks(f"method {method:#x}")
        if size < HEADER.size or start + size > len(data):
            raise NotBlocks("bad size")
        try:
            out.append(_block(data[start : start + size]))
        except (lz4.block.LZ4BlockError, zstd.ZstdError, IndexError, struct.error) as error:
            raise NotBlocks(str(error)) from error
        at = start + size
    return b"".join(out)


def readable(path: Path) -> bytes:
    """The file's content as a reader would see it: decompressed where it is a stream."""
    data = path.read_bytes()
    try:
        return decompressed(data)
    except NotBlocks:
        return data


def files_under(root: Path) -> Iterator[Path]:
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = Path(top, name)
            if not path.is_symlink():
                yield path


def contents(root: Path, skip: frozenset[Path] = frozenset()) -> Iterator[tuple[Path, bytes]]:
    """Every file under ``root`` with both its raw and its readable bytes."""
    for path in files_under(root):
        if path in skip:
            continue
        try:
            raw = path.read_bytes()
        except OSError:
            continue  # a part ClickHouse removed while we walked
        try:
            plain = decompressed(raw)
        except NotBlocks:
            plain = b""
        yield path, raw + b"\0" + plain if plain else raw


def files_holding(root: Path, needle: bytes) -> list[str]:
    """The files under ``root`` that hold ``needle``, raw or decompressed."""
    return [str(path) for path, data in contents(root) if needle in data]
