"""Never a stored IP address, on disk: visitors with known, distinctive addresses are
served by Caddy and forwarded as Bunny records, and afterwards no file under
ECSTATIC_HOME, nor any row ClickHouse holds, carries any of those addresses in any form.

Why both a byte grep and a ClickHouse dump: ClickHouse compresses every column, and a
byte grep of compressed column files can miss an address (LZ4 back-references, ZSTD's
entropy coding). The grep therefore reads ClickHouse's files decompressed as well
(tests/disk_bytes.py), and the dump reads every stored table as the engine sees it; the
grep also covers everything stored plainly: spools, offsets, logs, the api's SQLite,
chDB's metadata. No table has an IP column at all (checked too), so an address could
only hide inside a string.

The one exception is Caddy's own live access log: it must be owner-only, and is the
intake's input (bounded by the roll size; rotated files are deleted once ingested).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.disk_bytes import contents

from .stackdriver import BROWSER_UA, git, make_repo, running_stack, stats, with_token

pytestmark = pytest.mark.integration

# Loopback addresses Linux routes on lo (all of 127/8), so Caddy sees them as the peer.
CADDY_IPS = ("127.45.67.89", "127.98.76.54")
# Documentation ranges: never a real visitor, never in any other data.
BUNNY_IPS = ("203.0.113.77", "2001:db8:4567::89ab", "198.51.100.213")

DUMP = r"""
import sys, clickhouse_connect
client = clickhouse_connect.get_client(interface="chdb", path=sys.argv[1])
tables = client.query(
    "SELECT database, name FROM system.tables WHERE notEmpty(data_paths) "
    "AND database NOT IN ('INFORMATION_SCHEMA', 'information_schema') "
    # A view writing TO a table stores nothing itself: its target is dumped.
    "AND engine != 'MaterializedView'"
).result_rows
columns = client.query(
    "SELECT database, table, name, type FROM system.columns "
    "WHERE database NOT IN ('system', 'INFORMATION_SCHEMA', 'information_schema')"
).result_rows
out = sys.stdout.buffer
for database, name in tables:
    out.write(f"== {database}.{name}\n".encode())
    out.write(client.raw_query(f"SELECT * FROM `{database}`.`{name}` FORMAT TSVRaw"))
for column in columns:
    out.write(("-- column " + " ".join(map(str, column)) + "\n").encode())
"""


def forms(ip: str) -> dict[str, bytes]:
    """Every way a program could have written ``ip``: text, packed, as an integer."""
    address = ipaddress.ip_address(ip)
    packed = address.packed
    found = {
        "text": str(address).encode(),
        "exploded": address.exploded.encode(),
        "upper": str(address).upper().encode(),
        "packed": packed,
        "packed little-endian": packed[::-1],
    }
    if address.version == 4:
        found["integer"] = str(int(address)).encode()
        found["v4-mapped"] = f"::ffff:{address}".encode()
    return found


def grep(root: Path, needles: dict[str, dict[str, bytes]], skip: set[Path]) -> list[str]:
    """Each IP form found under ``root``, in raw bytes or in a decompressed stream."""
    found = []
    for path, data in contents(root, frozenset(skip)):
        for ip, ways in needles.items():
            for way, needle in ways.items():
                if needle in data:
                    at = data.index(needle)
                    found.append(f"{ip} ({way}) in {path} at byte {at}")
    return found


def serve_from(source_ip: str, port: int, host: str, path: str) -> int:
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source_ip, 0)
    )
    try:
        connection.request("GET", path, headers={"Host": host, "User-Agent": BROWSER_UA})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def bunny_record(host: str, path: str, ip: str, request_id: str) -> bytes:
    body = {
        "PullZoneId": 1,
        "Host": host,
        "PathAndQuery": path,
        "Status": 200,
        "BytesSent": 321,
        "Timestamp": int(time.time() * 1000),
        "UserAgent": BROWSER_UA,
        "Referer": "",
        "RemoteIp": ip,
        "Country": "NL",
        "RequestId": request_id,
        "Cached": True,
        "HeaderRange": "",
    }
    return b"<165>1 - edge bunny - log - " + json.dumps(body).encode() + b"\n"


def test_no_visitor_ip_is_stored_anywhere(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    source = make_repo(
        tmp_path_factory.mktemp("source"),
        {f"caddy-{n}/index.html": b"<h1>private</h1>" for n in range(len(CADDY_IPS))},
    )
    with running_stack(home) as stack:
        token = stack.create_user("pat")
        site = stack.api("POST", "/v1/sites", token, json={"name": "private"}).json()
        git(source, "push", with_token(site["git_url"], token), "main")
        host = "private.localhost"
        paths = {}
        for n, ip in enumerate(CADDY_IPS):
            paths[ip] = f"/caddy-{n}/"
            assert serve_from(ip, stack.http_port, host, paths[ip]) == 200
        port = int(stack.env["ECSTATIC_INTAKE_SYSLOG_PORT"])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            for n, ip in enumerate(BUNNY_IPS):
                paths[ip] = f"/bunny-{n}/"
                connection.sendall(bunny_record(host, paths[ip], ip, f"privacy-{n}"))

        deadline = time.monotonic() + 90
        seen: set[str] = set()
        while time.monotonic() < deadline and not seen >= set(paths.values()):
            answer = stats(
                stack,
                token,
                site["id"],
                "breakdown",
                dimension="path",
                period="24h",
                bots="include",
            )
            if answer.status_code == 200:
                seen = {row["value"] for row in answer.json()["results"]}
            time.sleep(0.5)
        assert seen >= set(paths.values()), f"not all requests became queryable: {seen}"
        visitors = stats(stack, token, site["id"], "timeseries", period="24h", bots="include")
        assert visitors.json()["totals"]["visitors"] >= len(paths)  # one visitor per address
        access_log = home / "logs" / "access.log"
        live_mode = stat.S_IMODE(access_log.stat().st_mode)
        while_running = grep(home, {ip: forms(ip) for ip in paths}, skip={access_log})

    # Stopped: the intake has flushed its buffers and saved what it keeps.
    needles = {ip: forms(ip) for ip in paths}
    # The control: the same walk does find the addresses in Caddy's own log.
    control = grep(home, needles, skip=set())
    for ip in CADDY_IPS:
        assert any(hit.startswith(f"{ip} (text) in {access_log} ") for hit in control), ip
    rotated = sorted(p.name for p in access_log.parent.glob("access-*.log*"))
    dumped = subprocess.run(
        [sys.executable, "-c", DUMP, str(home / "clickhouse")], capture_output=True, timeout=120
    )
    assert dumped.returncode == 0, dumped.stderr.decode(errors="replace")[-3000:]
    dump = dumped.stdout
    assert b"== default.requests" in dump and b"/bunny-0/" in dump  # the dump saw the rows
    ip_columns = [
        line
        for line in dump.splitlines()
        if line.startswith(b"-- column") and (b"IPv4" in line or b"IPv6" in line)
    ]
    in_rows = [
        f"{ip} ({way}) in a ClickHouse row"
        for ip, ways in needles.items()
        for way, needle in ways.items()
        if len(needle) > 4 and needle in dump
    ]
    on_disk = grep(home, needles, skip={access_log})

    problems = []
    if live_mode & 0o077:
        problems.append(f"Caddy's live access log is {live_mode:04o}, not owner-only")
    if rotated:
        problems.append(f"rotated Caddy logs left after ingestion: {rotated}")
    problems += [f"an IP column: {line.decode()}" for line in ip_columns]
    problems += in_rows
    problems += sorted(set(while_running) | set(on_disk))
    assert problems == [], "\n".join(problems)
