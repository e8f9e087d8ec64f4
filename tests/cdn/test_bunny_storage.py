"""BunnyStorage and BunnyPurge against the local Bunny double (and the double itself)."""

from __future__ import annotations

import hashlib
import logging
import time
import traceback

import pytest
import requests

from services.cdn.bunny_http import (
    BunnyAuthError,
    BunnyError,
    BunnyNotFound,
    BunnyUnavailable,
    RetryPolicy,
)
from services.cdn.bunny_purge import BunnyPurge
from services.cdn.bunny_storage import BunnyStorage, StorageEntry, sha256_hex
from tests.cdn.bunny_double import BunnyDouble

ZONE = "ecstatic-zone"
KEY = "zone-pw-7f3c9e2a-SECRET"
ACCOUNT_KEY = "account-key-51d0b8-SECRET"
PULL_ZONE = 4242
FAST = RetryPolicy(attempts=4, backoff_initial=0.01, backoff_max=0.05, timeout=(1.0, 0.3))
LISTING_FIELDS = [
    "Guid",
    "StorageZoneName",
    "Path",
    "ObjectName",
    "Length",
    "LastChanged",
    "ServerId",
    "ArrayNumber",
    "IsDirectory",
    "UserId",
    "ContentType",
    "DateCreated",
    "StorageZoneId",
    "Checksum",
    "ReplicatedZones",
]


@pytest.fixture
def double():
    with BunnyDouble(api_key=ACCOUNT_KEY) as bunny:
        bunny.add_zone(ZONE, KEY)
        bunny.pull_zones.add(PULL_ZONE)
        yield bunny


@pytest.fixture
def storage(double):
    client = BunnyStorage(ZONE, KEY, double.storage_host, scheme="http", policy=FAST)
    yield client
    client.close()


@pytest.fixture
def purger(double):
    client = BunnyPurge(ACCOUNT_KEY, double.api_url, policy=FAST)
    yield client
    client.close()


def raw(double, method, path, key=KEY, **kwargs):
    """A request straight to the double, bypassing the client under test."""
    url = f"http://{double.storage_host}/{ZONE}/{path}"
    headers = {"AccessKey": key, **kwargs.pop("headers", {})}
    return requests.request(method, url, headers=headers, timeout=5, **kwargs)


# -- the double answers like bunny.net ----------------------------------------------------


def test_double_rejects_a_wrong_key_with_bunnys_body(double):
    response = raw(double, "GET", "", key="nope")
    assert response.status_code == 401
    assert response.json() == {"HttpCode": 401, "Message": "Unauthorized"}


def test_double_upload_listing_and_delete_bodies(double):
    content = b"file1"
    put = raw(double, "PUT", "dir/file1.txt", data=content)
    assert (put.status_code, put.json()) == (201, {"HttpCode": 201, "Message": "File uploaded."})

    listing = raw(double, "GET", "dir/")
    assert listing.status_code == 200
    assert listing.headers["Content-Encoding"] == "gzip"  # requests accepts gzip
    [entry] = listing.json()
    assert list(entry) == LISTING_FIELDS
    assert entry["Checksum"] == "C147EFCFC2D7EA666A9E4F5187B115C90903F0FC896A56DF9A6EF5D8F3FC9F31"
    assert (entry["Path"], entry["ObjectName"], entry["Length"]) == (
        f"/{ZONE}/dir/",
        "file1.txt",
        5,
    )
    [root] = raw(double, "GET", "").json()
    assert (root["ObjectName"], root["IsDirectory"], root["Checksum"], root["Length"]) == (
        "dir",
        True,
        None,
        0,
    )

    deleted = raw(double, "DELETE", "dir/file1.txt")
    assert deleted.json() == {"HttpCode": 200, "Message": "File deleted successfuly."}
    missing = raw(double, "DELETE", "dir/file1.txt")
    assert (missing.status_code, missing.json()["HttpCode"]) == (404, 404)
    assert raw(double, "GET", "dir/file1.txt").json() == {
        "HttpCode": 404,
        "Message": "Object Not Found",
    }
    # an emptied directory still lists, and lists empty
    assert [e["ObjectName"] for e in raw(double, "GET", "").json()] == ["dir"]
    assert raw(double, "GET", "dir/").json() == []
    assert raw(double, "GET", "never/").json() == []


def test_double_rejects_a_wrong_or_lowercase_checksum(double):
    lower = hashlib.sha256(b"x").hexdigest()
    for checksum in ("0" * 64, lower):
        response = raw(double, "PUT", "f", data=b"x", headers={"Checksum": checksum})
        assert response.status_code == 400
    assert double.files(ZONE) == {}


# -- the storage client -------------------------------------------------------------------


def test_put_sends_raw_bytes_and_the_uppercase_checksum(double, storage):
    storage.put("index.html", b"<h1>hi</h1>")

    [put] = double.matching("PUT")
    assert put.headers["Checksum"] == hashlib.sha256(b"<h1>hi</h1>").hexdigest().upper()
    assert put.body_size == len(b"<h1>hi</h1>")
    assert "AccessKey" not in put.headers and put.status == 201
    assert storage.get("index.html") == b"<h1>hi</h1>"
    assert double.files(ZONE) == {"index.html": b"<h1>hi</h1>"}


def test_a_large_file_is_streamed_from_disk_and_resent_whole_on_retry(double, storage, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 8192)  # 2 MiB, above the in-memory limit
    double.fail("PUT", f"/{ZONE}/big.bin", times=1, status=500)

    storage.put("big.bin", big)

    attempts = double.matching("PUT")
    assert [r.status for r in attempts] == [500, 201]
    assert {r.body_size for r in attempts} == {big.stat().st_size}
    assert double.files(ZONE)["big.bin"] == big.read_bytes()


def test_list_and_walk(double, storage):
    for path in ("site/index.html", "site/css/a.css", "site/css/deep/b.css", "other/x"):
        storage.put(path, path.encode())

    # bunny's listing order is unconfirmed (the double does not sort), so compare sorted
    assert sorted(storage.list("site"), key=lambda e: e.name) == [
        StorageEntry("css", 0, True, None),
        StorageEntry("index.html", 15, False, sha256_hex(b"site/index.html")),
    ]
    double.clear_log()
    assert storage.walk("site") == {
        "index.html": sha256_hex(b"site/index.html"),
        "css/a.css": sha256_hex(b"site/css/a.css"),
        "css/deep/b.css": sha256_hex(b"site/css/deep/b.css"),
    }
    # one listing per directory, nothing else
    assert sorted(r.path for r in double.requests) == [
        f"/{ZONE}/site/",
        f"/{ZONE}/site/css/",
        f"/{ZONE}/site/css/deep/",
    ]
    assert set(storage.walk("")) == {
        "site/index.html",
        "site/css/a.css",
        "site/css/deep/b.css",
        "other/x",
    }
    assert storage.walk("missing") == {}


NAMES = ["naïve café/ü 1.html", "a b/c#d?e.html", "100%/x+y&z=1.css", "日本/ファイル 🚀.txt"]


@pytest.mark.parametrize("name", NAMES)
def test_unicode_and_spaces_round_trip(double, storage, name):
    storage.put(f"site/{name}", name.encode())

    [put] = double.matching("PUT")
    assert put.path == f"/{ZONE}/site/{name}"  # decoded server-side to the same name
    assert " " not in put.raw_path and "#" not in put.raw_path and "?" not in put.raw_path
    assert storage.get(f"site/{name}") == name.encode()
    assert storage.walk("site") == {name: sha256_hex(name.encode())}
    assert storage.delete(f"site/{name}") is True
    assert storage.walk("site") == {}


def test_delete_and_delete_dir(double, storage):
    for path in ("s/a", "s/d/b", "s/d/e/c", "t/keep"):
        storage.put(path, b"1")

    assert storage.delete("s/a") is True
    assert storage.delete("s/a") is False  # already gone: not an error
    with pytest.raises(BunnyNotFound, match="s/a does not exist"):
        storage.get("s/a")
    assert storage.delete_dir("s/d") is True
    assert double.files(ZONE) == {"t/keep": b"1"}
    assert storage.delete_dir("s/d") is False
    assert [r.raw_path for r in double.matching("DELETE")][-2:] == [f"/{ZONE}/s/d/"] * 2


@pytest.mark.parametrize("root", ["", "/", "//"])
def test_delete_dir_never_deletes_the_zone_root(double, storage, root):
    storage.put("keep", b"1")
    double.clear_log()
    with pytest.raises(ValueError, match="root"):
        storage.delete_dir(root)
    assert double.requests == []


@pytest.mark.parametrize("path", ["../x", "/abs", "a//b", "a/./b", "", "a/\x00"])
def test_unsafe_paths_are_refused_before_any_request(double, storage, path):
    with pytest.raises(ValueError, match="invalid file path"):
        storage.put(path, b"x")
    assert double.requests == []


def test_a_wrong_key_fails_at_once_and_says_what_to_check(double):
    client = BunnyStorage(ZONE, "wrong-SECRET-key", double.storage_host, scheme="http", policy=FAST)
    with pytest.raises(BunnyAuthError) as caught:
        client.list()
    message = str(caught.value)
    assert "401" in message and "wrong password" in message and "StorageHostname" in message
    assert "wrong-SECRET-key" not in message
    assert len(double.requests) == 1  # a 401 is never retried


def test_a_rejected_checksum_is_a_clear_error_without_retries(double, storage):
    with pytest.raises(BunnyError, match="HTTP 400 Checksum mismatch") as caught:
        storage.put("f", b"data", checksum="0" * 64)
    assert caught.value.status == 400 and not isinstance(caught.value, BunnyUnavailable)
    assert len(double.requests) == 1


@pytest.mark.parametrize(
    "inject, extra_attempts",
    [
        (lambda d: d.fail("PUT", "*", times=2, status=503), 2),
        (lambda d: d.fail("PUT", "*", times=3, status=500), 3),
        (lambda d: d.fail("PUT", "*", times=2, status=429), 2),
        (lambda d: d.stall("PUT", "*", times=1, seconds=1.0), 1),
        (lambda d: d.drop("PUT", "*", times=2), 2),
        (lambda d: d.drop("PUT", "*", times=1, after_apply=True), 1),
    ],
    ids=["503x2", "500x3", "429x2", "stall", "drop", "lost-response"],
)
def test_transient_failures_are_retried(double, storage, inject, extra_attempts):
    inject(double)
    storage.put("page.html", b"v2")
    assert len(double.matching("PUT")) == 1 + extra_attempts
    assert double.files(ZONE) == {"page.html": b"v2"}


def test_a_retried_delete_whose_first_response_was_lost_succeeds(double, storage):
    storage.put("gone", b"1")
    double.drop("DELETE", "*", after_apply=True)
    assert storage.delete("gone") is False  # the retry found it already deleted
    assert [r.status for r in double.matching("DELETE")] == [None, 404]
    assert double.files(ZONE) == {}


def test_retry_after_is_honoured(double):
    patient = RetryPolicy(attempts=2, backoff_initial=0.01, backoff_max=1.0, timeout=(1, 1))
    client = BunnyStorage(ZONE, KEY, double.storage_host, scheme="http", policy=patient)
    double.fail("GET", "*", times=1, status=429, retry_after=0.3)
    started = time.monotonic()
    assert client.list() == []
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize(
    "inject, cause",
    [
        (lambda d: d.fail("PUT", "*", times=99, status=503), "HTTP 503"),
        (lambda d: d.stall("PUT", "*", times=99, seconds=1.0), "ReadTimeout"),
        (lambda d: d.drop("PUT", "*", times=99), "ConnectionError"),
    ],
    ids=["503", "timeout", "drop"],
)
def test_retries_are_bounded(double, storage, inject, cause):
    inject(double)
    with pytest.raises(BunnyUnavailable) as caught:
        storage.put("dir/page.html", b"x")
    assert str(caught.value).startswith("PUT dir/page.html failed after 4 attempts")
    assert cause in str(caught.value)
    assert len(double.matching("PUT")) == FAST.attempts
    assert double.files(ZONE) == {}


def test_the_key_never_appears_in_logs_errors_or_reprs(double, storage, caplog):
    caplog.set_level(logging.DEBUG)  # urllib3 and tenacity included
    errors = []
    double.fail("PUT", "*", times=2, status=503)
    double.stall("GET", "*", times=1, seconds=1.0)
    storage.put("a", b"1")
    storage.walk("")
    double.fail("DELETE", "*", times=99, status=502)
    for call in (
        lambda: storage.delete("a"),
        lambda: storage.get("nothing"),
        lambda: BunnyStorage(ZONE, "bad" + KEY, double.storage_host, scheme="http").list(),
    ):
        with pytest.raises(BunnyError) as caught:
            call()
        errors.append(caught.value)

    assert len(caplog.records) >= 3  # the retries were logged
    texts = [caplog.text, repr(storage), *map(repr, errors), *map(str, errors)]
    texts += ["".join(traceback.format_exception(e)) for e in errors]  # with causes
    texts += [str(record.__dict__) for record in caplog.records]
    texts += [str(r.headers) for r in double.requests]
    assert all(KEY not in text for text in texts)


# -- the purge client ---------------------------------------------------------------------


def test_purge_everything_or_one_tag(double, purger):
    purger.purge(PULL_ZONE)
    purger.purge(PULL_ZONE, cache_tag="site-7")
    assert double.purges == [(PULL_ZONE, None), (PULL_ZONE, "site-7")]
    assert [(r.method, r.path, r.status) for r in double.requests] == [
        ("POST", f"/pullzone/{PULL_ZONE}/purgeCache", 204)
    ] * 2


def test_purge_of_an_unknown_zone_or_with_a_wrong_key(double, purger):
    with pytest.raises(BunnyNotFound, match="no such pull zone"):
        purger.purge(999)
    wrong = BunnyPurge("storage-SECRET-pw", double.api_url, policy=FAST)
    with pytest.raises(BunnyAuthError, match="account API key") as caught:
        wrong.purge(PULL_ZONE)
    assert "storage-SECRET-pw" not in str(caught.value)
    assert len(double.requests) == 2 and double.purges == []
    with pytest.raises(ValueError):
        purger.purge("4242")


def test_purge_is_retried_on_5xx_and_429(double, purger, caplog):
    caplog.set_level(logging.DEBUG)
    double.fail("POST", "*", times=1, status=503)
    double.fail("POST", "*", times=1, status=429)
    purger.purge(PULL_ZONE)
    assert [r.status for r in double.requests] == [503, 429, 204]
    assert double.purges == [(PULL_ZONE, None)]
    assert ACCOUNT_KEY not in caplog.text + repr(purger)
    double.fail("POST", "*", times=99, status=500)
    with pytest.raises(BunnyUnavailable, match="after 4 attempts"):
        purger.purge(PULL_ZONE)
