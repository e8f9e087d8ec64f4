"""Validators for names and bodies, including property tests with hypothesis."""

from __future__ import annotations

import string

import pytest
from falcon import testing
from hypothesis import given
from hypothesis import strategies as st

from services.core.errors import BadRequest
from services.falcon_apps.api.validate import (
    SITE_NAME,
    deploy_body,
    is_site_name,
    read_json_object,
    site_body,
    site_name,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
LABEL_CHARS = string.ascii_lowercase + string.digits + "-"


def dns_label_oracle(text: str) -> bool:
    """The DNS-label language, stated without a regex."""
    return (
        1 <= len(text) <= 63
        and all(c in LABEL_CHARS for c in text)
        and text[0] != "-"
        and text[-1] != "-"
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=8,
)


@given(st.text())
def test_site_name_check_matches_the_dns_label_language_on_any_text(text):
    assert is_site_name(text) == dns_label_oracle(text)


# Text drawn mostly from the label alphabet plus the characters most likely to slip through
# (upper case, dots, newlines), so hypothesis reaches both sides of the boundary often.
@given(st.text(alphabet=LABEL_CHARS + "A.\n_ ", max_size=70))
def test_site_name_check_matches_oracle_near_the_boundary(text):
    assert is_site_name(text) == dns_label_oracle(text)


@given(st.from_regex(SITE_NAME, fullmatch=True))
def test_every_dns_label_is_accepted(label):
    assert site_name(label) == label


@given(json_values)
def test_site_name_never_crashes_on_any_json_value(value):
    try:
        assert site_name(value) == value
    except BadRequest as exc:
        assert exc.message.startswith("name must")


@given(st.dictionaries(st.text(max_size=12), json_values, max_size=5))
def test_bodies_never_raise_anything_but_bad_request(body):
    for check in (site_body, deploy_body):
        try:
            check(body)
        except BadRequest:
            pass


@pytest.mark.parametrize("name", ["a", "0", "a-b", "a" * 63, "x1-2-3y", "123"])
def test_valid_site_names(name):
    assert is_site_name(name)


@pytest.mark.parametrize(
    "name", ["", "-a", "a-", "A", "a.b", "a_b", "a" * 64, "blog\n", " blog", "blög", None, 5]
)
def test_invalid_site_names(name):
    assert not is_site_name(name)


def good_deploy(**overrides):
    return {
        "commit_sha": SHA,
        "release": "20240501-abc.1",
        "file_count": 3,
        "bytes": 10,
        **overrides,
    }


@pytest.mark.parametrize("release", ["r1", "20240501T120000123456Z-0123456789ab", "v1.2_3"])
def test_deploy_body_accepts_release_ids(release):
    # The second is the git room's release id format.
    assert deploy_body(good_deploy(release=release))["release"] == release


def test_deploy_body_accepts_and_normalises():
    assert deploy_body(good_deploy(commit_sha=SHA.upper(), bytes=0)) == good_deploy(bytes=0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"commit_sha": SHA[:-1]}, "commit_sha"),
        ({"commit_sha": SHA[:-1] + "g"}, "commit_sha"),
        ({"commit_sha": SHA + "\n"}, "commit_sha"),
        ({"commit_sha": 1234}, "commit_sha"),
        ({"release": ".."}, "release"),
        ({"release": "a/b"}, "release"),
        ({"release": ""}, "release"),
        ({"release": "r" * 129}, "release"),
        ({"file_count": -1}, "file_count"),
        ({"file_count": 1.5}, "file_count"),
        ({"file_count": "3"}, "file_count"),
        ({"file_count": True}, "file_count"),
        ({"bytes": 2**63}, "bytes"),
        ({"bytes": None}, "bytes"),
        ({"extra": 1}, "unknown field"),
    ],
)
def test_deploy_body_rejects(overrides, message):
    with pytest.raises(BadRequest, match=message):
        deploy_body(good_deploy(**overrides))


def test_deploy_body_names_missing_fields():
    with pytest.raises(BadRequest, match="missing field.*release, bytes"):
        deploy_body({"commit_sha": SHA, "file_count": 1})


def request(body: bytes):
    return testing.create_req(method="POST", path="/", body=body)


def test_read_json_object_bounds_the_read_itself():
    # Without the Content-Length hook in front, the reader still refuses a large body.
    with pytest.raises(BadRequest, match="exceeds 100 bytes"):
        read_json_object(request(b'{"name": "' + b"a" * 200 + b'"}'), limit=100)


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "JSON object"),
        (b"   ", "JSON object"),
        (b"[1, 2]", "JSON object"),
        (b'"name"', "JSON object"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[" * 50_000 + b"]" * 50_000, "not valid JSON"),
        (b'{"n": ' + b"9" * 5000 + b"}", "not valid JSON"),
    ],
)
def test_read_json_object_rejects(body, message):
    with pytest.raises(BadRequest, match=message):
        read_json_object(request(body), limit=200_000)


def test_read_json_object_parses():
    assert read_json_object(request(b' {"name": "blog"} ')) == {"name": "blog"}
