"""Preview hostnames: DNS-safe labels, unique per site whatever the branch names."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.falcon_apps.api.previews import MAX_LABEL, branch_slug, preview_label
from services.falcon_apps.api.store import MetadataStore

SHA = "0123456789abcdef0123456789abcdef01234567"
LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
site_names = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)
branches = st.text(min_size=1, max_size=300)


def is_dns_label(label: str) -> bool:
    # IDNA reserves "--" in the 3rd and 4th places ("xn--"): never produce one.
    return bool(LABEL.fullmatch(label)) and len(label) <= MAX_LABEL and label[2:4] != "--"


@pytest.mark.parametrize(
    "branch, label",
    [
        ("main", "main--blog"),
        ("Feature/Login", "feature-login--blog"),
        ("feat__x..y", "feat-x-y--blog"),
        ("--weird--", "weird--blog"),
        ("ünïcode", "n-code--blog"),
        ("///", "branch--blog"),
    ],
)
def test_slugs(branch, label):
    assert preview_label(branch, "blog") == label


def test_long_and_two_letter_branches_get_a_hash():
    assert preview_label("x" * 80, "blog") is None
    hashed = preview_label("x" * 80, "blog", 6)
    assert len(hashed) == MAX_LABEL and hashed.endswith("--blog") and is_dns_label(hashed)
    assert preview_label("xn", "blog") is None  # "xn--blog" would read as punycode
    assert is_dns_label(preview_label("xn", "blog", 6))


@settings(max_examples=300, deadline=None)
@given(branch=branches, site=site_names, hash_length=st.sampled_from([0, 6, 12, 20]))
def test_any_branch_gives_a_valid_dns_label(branch, site, hash_length):
    label = preview_label(branch, site, hash_length)
    if label is not None:
        assert is_dns_label(label), label
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", branch_slug(branch))


@settings(max_examples=25, deadline=None)
@given(
    names=st.lists(
        st.one_of(branches, st.sampled_from(["a/b", "a-b", "A_B", "a.b", "x" * 70, "x" * 71])),
        min_size=2,
        max_size=8,
        unique=True,
    ),
    site=st.sampled_from(["blog", "b", "s" * 55, "t" * 63]),
)
def test_distinct_branches_get_distinct_valid_hostnames(names, site):
    names = [n for n in names if not re.search(r"[\x00-\x1f\x7f\ud800-\udfff]", n)][:8]
    with tempfile.TemporaryDirectory() as tmp:
        store = MetadataStore(Path(tmp) / "db.sqlite3")
        user, _ = store.create_user("alice")
        created = store.create_site(user["id"], site, f"{site}.localhost")
        hostnames = {}
        for name in names:
            fields = {"context": "preview", "branch": name, "commit_sha": SHA}
            fields.update(author=None, message=None)
            hostnames[name] = store.deploys.create(user["id"], created["id"], fields, "localhost")[
                "hostname"
            ]
        assert len(set(hostnames.values())) == len(names)
        for hostname in hostnames.values():
            label, domain = hostname.split(".", 1)
            assert domain == "localhost" and is_dns_label(label), hostname
            assert store.has_hostname(hostname)
        store.close()


def test_a_preview_never_takes_another_sites_hostname(store, alice, bob):
    store.create_site(bob["id"], "x--blog", "x--blog.localhost")
    site = store.create_site(alice["id"], "blog", "blog.localhost")
    fields = {
        "context": "preview",
        "branch": "x",
        "commit_sha": SHA,
        "author": None,
        "message": None,
    }
    hostname = store.deploys.create(alice["id"], site["id"], fields, "localhost")["hostname"]
    assert hostname != "x--blog.localhost" and hostname.endswith("--blog.localhost")
