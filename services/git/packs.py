"""Receive a pack without trusting it: sizes are checked before anything is inflated.

dulwich's ``add_thin_pack`` inflates every object of the incoming stream into memory
(``read_zlib_chunks``), whatever size its header declares, and inflates every object
once more to index it. ``add_guarded_pack`` does the same job with bounded memory:

* each object's header (type, inflated size) is read first, and a size over
  ``max_object_bytes`` is refused before one byte is inflated; for a delta, the
  target size at the start of the delta stream is checked the same way;
* the stream is inflated in bounded steps only to verify it, hashing full objects
  as it goes, so indexing them needs no second pass;
* deltas are resolved by dulwich's ``PackIndexer``, with the bases it holds at
  once bounded too.

On any failure the temporary pack file is removed (dulwich leaves it behind).
"""

from __future__ import annotations

import binascii
import contextlib
import os
import tempfile
import threading
import zlib
from collections.abc import Callable
from io import BytesIO
from typing import Any

from cachetools import LRUCache
from dulwich.errors import ChecksumMismatch
from dulwich.objects import object_header
from dulwich.pack import (
    DELTA_TYPES,
    OFS_DELTA,
    REF_DELTA,
    PackData,
    PackIndexer,
    PackStreamCopier,
    UnpackedObject,
    _decode_delta_base_offset,
    _decode_object_header,
    read_pack_header,
    take_msb_bytes,
)

from .limits import IntakeLimits, PushTooLarge

__all__ = ["BlobReader", "ObjectSizes", "add_guarded_pack", "stream_blob"]

_STEP = 64 << 10
_KINDS = {1: "commit", 2: "tree", 3: "file", 4: "tag", OFS_DELTA: "delta", REF_DELTA: "delta"}


def add_guarded_pack(store, read_all, read_some, limits: IntakeLimits):
    """Stream a pack into ``store`` (a ``DiskObjectStore``) within ``limits``.

    Args:
        store: The repository's object store.
        read_all: Reads exactly n bytes (dulwich's ``proto.read``).
        read_some: Reads at least one byte (``proto.recv``), or None.
        limits: Object size and count limits.

    Returns:
        The completed ``Pack``.

    Raises:
        PushTooLarge: an object or the pack breaks a limit.
        zlib.error, ChecksumMismatch, OSError: a corrupt or truncated pack.
    """
    fd, path = tempfile.mkstemp(dir=store.path, prefix="tmp_pack_")
    try:
        with os.fdopen(fd, "w+b") as f:
            os.chmod(path, 0o400)  # owner-only, read-only (dulwich's PACK_MODE is 0444)
            known: dict[int, tuple[bytes, int]] = {}
            indexer = _Indexer(f, store.object_format.hash_func, store.get_raw, known, limits)
            copier = _GuardedCopier(
                store.object_format.hash_func, read_all, read_some, f, indexer, known, limits
            )
            copier.verify()
            f.flush()
            f.seek(0)
            with PackData(path, file=f, object_format=store.object_format) as data:
                indexer.set_pack_data(data)
                entries, ext_refs = store._index_pack(indexer, len(copier))
            return store._complete_pack(f, path, entries, ext_refs)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise


class _GuardedCopier(PackStreamCopier):
    """``PackStreamCopier`` whose ``read_objects`` checks sizes and keeps no payloads."""

    def __init__(self, hash_func, read_all, read_some, outfile, indexer, known, limits):
        super().__init__(hash_func, read_all, read_some, outfile, delta_iter=indexer)
        self._known = known
        self._limits = limits

    def read_objects(self, compute_crc32: bool = False):
        """Yield each object's header fields; see ``PackStreamReader.read_objects``."""
        _version, self._num_objects = read_pack_header(self.read)
        if self._num_objects > self._limits.max_objects:
            raise PushTooLarge(
                f"push refused: {self._num_objects} objects in one push, "
                f"more than the limit of {self._limits.max_objects}"
            )
        for _ in range(self._num_objects):
            offset = self.offset
            unpacked, unused = self._unpack(offset)
            unpacked.offset = offset
            # As dulwich does: what zlib read past this object starts the next one.
            self._rbuf = BytesIO(unused + self._rbuf.read())
            yield unpacked
        if self._buf_len() < self._hash_size:
            self.read(self._hash_size)
        pack_sha = bytes(bytearray(self._trailer))
        if pack_sha != self.sha.digest():
            raise ChecksumMismatch(pack_sha.hex(), self.sha.hexdigest())

    def _unpack(self, offset: int) -> tuple[UnpackedObject, bytes]:
        raw, crc = take_msb_bytes(self.read, crc32=0)
        type_num, size = _decode_object_header(raw)
        delta_base: int | bytes | None = None
        if type_num == OFS_DELTA:
            raw, crc = take_msb_bytes(self.read, crc32=crc)
            delta_base = _decode_delta_base_offset(raw)
        elif type_num == REF_DELTA:
            delta_base = self.read(self._hash_size)
            crc = binascii.crc32(delta_base, crc)
        elif type_num not in _KINDS:
            raise zlib.error(f"unknown pack object type {type_num}")
        if size > self._limits.max_object_bytes:
            raise self._limits.object_too_large(_KINDS[type_num], size)
        sha = None if type_num in DELTA_TYPES else self.hash_func(object_header(type_num, size))
        unused, crc, head = _inflate_checked(self.recv, size, sha, crc)
        if type_num in DELTA_TYPES:
            target = _delta_target_size(head)
            if target > self._limits.max_object_bytes:
                raise self._limits.object_too_large("file", target)
        else:
            self._known[offset] = (sha.digest(), crc)
        unpacked = UnpackedObject(type_num, delta_base=delta_base, decomp_len=size, crc32=crc)
        return unpacked, unused


def _inflate_checked(read_some: Callable[[int], bytes], size: int, sha, crc: int):
    """Inflate one zlib stream in bounded steps, checking it holds exactly ``size`` bytes.

    Returns:
        (bytes read past the stream, crc32 of the entry, its first inflated bytes).
    """
    inflater = zlib.decompressobj()
    produced = 0
    head = b""
    while not inflater.eof:
        data = read_some(_STEP)
        if not data:
            raise zlib.error("EOF before end of zlib stream")
        pending = data
        while not inflater.eof:
            piece = inflater.decompress(pending, _STEP)
            produced += len(piece)
            if produced > size:
                raise zlib.error("decompressed data exceeds expected size")
            if len(head) < 32:
                head += piece[:32]
            if sha is not None:
                sha.update(piece)
            pending = inflater.unconsumed_tail
            if not pending and len(piece) < _STEP:
                break  # input used up and no output held back: read more
        unused = inflater.unused_data if inflater.eof else b""
        crc = binascii.crc32(data[: len(data) - len(unused)], crc)
    if produced != size:
        raise zlib.error("decompressed data does not match expected size")
    return inflater.unused_data, crc & 0xFFFFFFFF, head


def _delta_target_size(head: bytes) -> int:
    """The target size from a delta's header (two varints: source size, target size)."""
    pos = 0
    values = []
    for _ in range(2):
        value = shift = 0
        while True:
            if pos >= len(head):
                raise zlib.error("truncated delta header")
            byte = head[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        values.append(value)
    return values[1]


class _Indexer(PackIndexer):
    """``PackIndexer`` that reuses the stream pass's hashes of full objects.

    A full object is inflated again only when a delta needs it as a base. The bases
    waiting in the chain walk are capped, so a crafted delta tree cannot make us
    hold many large objects at once.
    """

    def __init__(self, f, hash_func, resolve_ext_ref, known, limits: IntakeLimits):
        super().__init__(f, hash_func, resolve_ext_ref=resolve_ext_ref)
        self._known = known
        self._max_pending = 3 * limits.max_object_bytes

    def _walk_all_chains(self):
        for offset, type_num in self._full_ofs:
            sha, crc = self._known[offset]
            if offset in self._pending_ofs or sha in self._pending_ref:
                yield from self._follow_chain(offset, type_num, None)
            else:
                yield sha, offset, crc
        yield from self._walk_ref_chains()
        assert not self._pending_ofs, repr(self._pending_ofs)

    def _follow_chain(self, offset, obj_type_num, base_chunks):
        todo = [(offset, obj_type_num, base_chunks)]
        while todo:
            offset, obj_type_num, base_chunks = todo.pop()
            unpacked = self._resolve_object(offset, obj_type_num, base_chunks)
            yield self._result(unpacked)
            unblocked = list(self._pending_ofs.pop(unpacked.offset, []))
            unblocked += self._pending_ref.pop(unpacked.sha(), [])
            todo.extend((o, unpacked.obj_type_num, unpacked.obj_chunks) for o in unblocked)
            held = {id(c): sum(map(len, c)) for _o, _t, c in todo if c is not None}
            if sum(held.values()) > self._max_pending:
                raise PushTooLarge("push refused: its deltas need too much memory to resolve")


def stream_blob(store, sha: bytes, step: int = 1 << 20):
    """``(size, chunks)`` of a packed, undeltified blob, inflated a step at a time; else None.

    ``store[sha].data`` holds a blob twice over (inflated chunks, then joined) beside
    its mmapped pack pages: three times a 100 MiB file. Reading the pack file at the
    object's offset keeps one step in memory. Deltified or loose objects return None
    (the caller loads those whole; they are bounded by ``max_object_bytes``). Each
    stream reads its own open file, closed as its chunks end (``BlobReader`` shares one
    between many blobs read in turn).
    """
    reader = BlobReader(store, step)
    streamed = reader.stream(sha)
    if streamed is None:
        reader.close()
        return None
    size, chunks = streamed
    return size, _closing(chunks, reader)


def _closing(chunks, reader: BlobReader):
    with reader:
        yield from chunks


def _inflate_from(f, size: int, step: int):
    # ``f`` stands at the start of an object's zlib stream.
    inflater = zlib.decompressobj()
    produced = 0
    while not inflater.eof:
        data = f.read(_STEP) if not inflater.unconsumed_tail else inflater.unconsumed_tail
        if not data:
            raise zlib.error("EOF before end of zlib stream")
        piece = inflater.decompress(data, step)
        produced += len(piece)
        if produced > size:
            raise zlib.error("decompressed data exceeds expected size")
        if piece:
            yield piece
    if produced != size:
        raise zlib.error("decompressed data does not match expected size")


class _PackFiles:
    """A store's packs, listed once, and their data files, each opened once (``with``)."""

    def __init__(self, store):
        self._store = store
        self._packs = list(getattr(store, "packs", ()))  # the property lists the directory
        self._files: dict[str, Any] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the pack files opened so far."""
        for f in self._files.values():
            f.close()
        self._files.clear()

    def _open(self, path: str):
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = open(path, "rb")  # noqa: SIM115 - closed by __exit__
        return f


class BlobReader(_PackFiles):
    """``stream_blob`` for many blobs of one store, one after another.

    The packs are listed once and each pack file is opened once: a checkout of a
    thousand files once listed the pack directory and opened the pack twice for each.
    Streams share the open files, so each must be read to its end (or dropped) before
    the next is asked for.
    """

    def __init__(self, store, step: int = 1 << 20):
        """Read blobs of ``store`` (a dulwich object store), ``step`` bytes at a time."""
        super().__init__(store)
        self._step = step

    def stream(self, sha: bytes):
        """``(size, chunks)`` of a packed, undeltified blob; else None (load it whole)."""
        for pack in self._packs:
            try:
                offset = pack.index.object_offset(sha)
            except KeyError:
                continue
            f = self._open(pack._data_path)
            f.seek(offset)
            type_num, size = _decode_object_header(take_msb_bytes(f.read)[0])
            if type_num != 3:
                return None
            return size, _inflate_from(f, size, self._step)
        return None


# Sizes by sha, across stores and pushes: a one-file change reads one header.
_SIZES: LRUCache[bytes, int] = LRUCache(maxsize=65536)
_SIZES_LOCK = threading.Lock()


class ObjectSizes(_PackFiles):
    """Inflated sizes of stored objects, read from their headers: nothing is inflated whole.

    A packed object's header holds its size; a delta's target size sits in the first
    bytes of its delta stream (a few bytes are inflated); a loose object's starts its
    zlib stream (``blob 1234\\0``). The pack files stay open while the sizes are read
    (``with ObjectSizes(store) as sizes``), so a tree of thousands of files costs one
    index lookup and one short read per file.
    """

    def size(self, sha: bytes) -> int | None:
        """The object's inflated size, or None if the store does not hold it.

        Raises:
            zlib.error: a corrupt header or delta stream.
        """
        with _SIZES_LOCK:
            known = _SIZES.get(sha)
        if known is not None:
            # The sha names the content, so its size is the same in every store. Whether
            # this store holds the object is the checkout's to find (it reads it).
            return known
        size = self._read(sha)
        if size is not None:
            with _SIZES_LOCK:
                _SIZES[sha] = size
        return size

    def _read(self, sha: bytes) -> int | None:
        for pack in self._packs:
            try:
                offset = pack.index.object_offset(sha)
            except KeyError:
                continue
            return self._packed(pack._data_path, offset)
        loose = getattr(self._store, "_get_shafile_path", None)
        if loose is not None:
            try:
                with open(loose(sha), "rb") as f:
                    return _loose_size(f)
            except FileNotFoundError:
                return None
        try:  # an in-memory store (tests): the object is in memory already
            return self._store[sha].raw_length()
        except KeyError:
            return None

    def _packed(self, path: str, offset: int) -> int:
        f = self._open(path)
        f.seek(offset)
        head = f.read(64)  # the header, a delta's base, the start of the zlib stream
        pos, type_num, size = _object_header(head)
        if type_num not in DELTA_TYPES:
            return size
        if type_num == OFS_DELTA:
            while pos < len(head) and head[pos] & 0x80:
                pos += 1
            pos += 1
        else:
            pos += 20
        if pos >= len(head):
            raise zlib.error("truncated pack entry")
        rest = iter((head[pos:],))
        return _delta_target_size(_inflate_head(lambda n: next(rest, b"") or f.read(n), 20))


def _object_header(head: bytes) -> tuple[int, int, int]:
    """``(bytes used, type, size)`` of a pack entry's header (a varint after 3 type bits)."""
    if not head:
        raise zlib.error("truncated pack entry")
    byte = head[0]
    type_num, size, shift, pos = (byte >> 4) & 7, byte & 0x0F, 4, 1
    while byte & 0x80:
        if pos >= len(head) or shift > 63:
            raise zlib.error("corrupt pack entry header")
        byte = head[pos]
        size |= (byte & 0x7F) << shift
        shift += 7
        pos += 1
    return pos, type_num, size


def _inflate_head(read: Callable[[int], bytes], wanted: int) -> bytes:
    inflater = zlib.decompressobj()
    out = b""
    while len(out) < wanted and not inflater.eof:
        data = inflater.unconsumed_tail or read(256)
        if not data:
            break
        out += inflater.decompress(data, wanted - len(out))
    return out


def _loose_size(f) -> int:
    head = _inflate_head(f.read, 32)
    kind, sep, rest = head.partition(b" ")
    size, nul, _ = rest.partition(b"\x00")
    if not sep or not nul or not size.isdigit():
        raise zlib.error("corrupt loose object header")
    return int(size)
