"""The data-directory grep used by the privacy tests sees through ClickHouse's codecs."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.disk_bytes import NotBlocks, decompressed, files_holding

pytestmark = pytest.mark.integration

CODECS = ("LZ4", "ZSTD(3)", "Delta, ZSTD", "NONE")


@pytest.mark.parametrize("codec", CODECS)
def test_a_value_is_found_whatever_the_codec(chdb_url, chdb_storage, codec):
    root = Path(urlsplit(chdb_url).path)
    table = "grep_" + os.urandom(4).hex()
    # Repetitive, so every codec shrinks it and a raw grep cannot see it whole.
    secret = ("s3cret-" + os.urandom(3).hex()) * 40
    column = "UInt64" if codec.startswith("Delta") else "String"
    chdb_storage.command(
        f"CREATE TABLE {table} (n {column} CODEC({codec}), v String CODEC({codec.split(', ')[-1]}))"
        " ENGINE = MergeTree ORDER BY tuple()"
    )
    try:
        chdb_storage.insert(
            table, [(7, secret)] if column == "UInt64" else [(secret, secret)], ("n", "v")
        )
        assert files_holding(root, secret.encode())
        raw_hits = [
            str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()
        ]
        if codec != "NONE":
            assert raw_hits == [], (
                "compressed on disk, or this proves nothing"
            )
    finally:
        chdb_storage.command(f"DROP TABLE {table} SYNC")
    assert files_holding(root, secret.encode()) == []


def test_plain_files_are_not_mistaken_for_blocks():
    for data in (b"", b"hello world", os.urandom(64), b"\0" * 40):
        with pytest.raises(NotBlocks):
            decompressed(data)
