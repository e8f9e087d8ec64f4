"""CountryLookup: registry countries of known blocks, IPv6, and junk that never raises."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.intake.geo import CountryLookup, geo_data_version

lookup = CountryLookup()


@pytest.mark.parametrize(
    ("ip", "country"),
    [
        ("8.8.8.8", "US"),  # Google, ARIN
        ("1.0.16.1", "JP"),  # APNIC
        ("193.0.6.139", "NL"),  # RIPE NCC's own block
        ("200.160.2.3", "BR"),  # NIC.br, LACNIC
        ("41.0.0.1", "ZA"),  # AFRINIC
        ("2001:4860:4860::8888", "US"),
        ("2001:67c:2e8::1", "NL"),  # RIPE NCC, IPv6
        ("2001:12ff::1", "BR"),
    ],
)
def test_known_blocks(ip, country):
    assert lookup.country(ip) == country


@pytest.mark.parametrize(
    ("ip", "country"),
    [
        ("[2001:67c:2e8::1]", "NL"),  # bracketed, as in a URL authority
        ("::ffff:193.0.6.139", "NL"),  # an IPv4 client on a dual-stack socket
        (" 8.8.8.8 ", "US"),
    ],
)
def test_other_spellings_of_an_address(ip, country):
    assert lookup.country(ip) == country


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "127.45.67.89",
        "10.1.2.3",
        "192.168.0.1",
        "192.0.2.1",  # documentation range
        "::1",
        "fe80::1%eth0",
        "2001:db8::1",  # documentation range
    ],
)
def test_private_and_reserved_have_no_country(ip):
    assert lookup.country(ip) == ""


@pytest.mark.parametrize(
    "junk", ["", "-", "junk", "1.2.3.4.5", "999.1.1.1", "::gg", "\x00", "a" * 10_000, None, 42]
)
def test_junk_has_no_country(junk):
    assert lookup.country(junk) == ""


@given(st.text(max_size=80))
def test_any_text_gives_a_code_or_nothing(text):
    code = lookup.country(text)
    assert code == "" or (len(code) == 2 and code.isascii() and code.isupper())


@given(st.ip_addresses())
def test_any_address_gives_a_code_or_nothing(address):
    code = lookup.country(str(address))
    assert code == "" or (len(code) == 2 and code.isupper())


def test_threads_agree():
    ips = ["8.8.8.8", "1.0.16.1", "193.0.6.139", "2001:67c:2e8::1", "junk"] * 200
    expected = [lookup.country(ip) for ip in ips]
    results: list[list[str]] = []

    def work():
        results.append([lookup.country(ip) for ip in ips])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 8


def test_the_data_release_is_known():
    assert geo_data_version().count(".") >= 2
