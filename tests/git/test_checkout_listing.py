"""A plain site's checkout is adopted as its release without a scan: the checkout's own
``Plan.listing`` must say exactly what a scan of the written directory would find."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_spare_checkout import LIMITS, spare_of, trees
from test_steps import Env

from services.cdn import local
from services.git.checkout import write_checkout


def scanned(root: Path) -> tuple[int, int, set[str], set[int]]:
    """What ``LocalCDN``'s scan finds: counts, directories, and every mode it saw."""
    result, directories = local._check_adopted(root)
    modes = set()
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            modes.add(stat.S_IMODE(os.lstat(os.path.join(top, name)).st_mode))
    relative = set(directories[1:])
    return result.file_count, result.bytes, relative, modes


def prefixes(plan) -> list[str]:
    """The root ("") and every directory the checkout holds (git keeps no empty ones)."""
    found = {""}
    for path, _sha in plan.files:
        parts = path.split("/")[:-1]
        found.update("/".join(parts[: n + 1]) + "/" for n in range(len(parts)))
    return sorted(found)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=trees, after=trees, data=st.data())
def test_the_listing_is_what_a_scan_of_the_checkout_finds(tmp_path_factory, before, after, data):
    tmp = tmp_path_factory.mktemp("listing")
    store, second, cache, spare = spare_of(tmp, before, after)
    # Both ways a checkout is written: in full, and from the last one's spare.
    for plan, root in (
        (write_checkout(store, second, LIMITS, tmp / "full"), tmp / "full"),
        (write_checkout(store, second, LIMITS, tmp / "new", cache=cache, spare=spare), tmp / "new"),
    ):
        prefix = data.draw(st.sampled_from(prefixes(plan)))
        listing = plan.listing(prefix)
        files, size, directories, modes = scanned(root / prefix if prefix else root)
        assert (listing.file_count, listing.bytes) == (files, size)
        assert set(listing.directories) == directories
        # Owner-only already: the scan would have changed nothing.
        assert modes <= {0o600, 0o700}


def test_a_plain_site_is_published_without_scanning_its_checkout(tmp_path, monkeypatch):
    env = Env(tmp_path, limits=LIMITS)

    def no_scan(source):
        raise AssertionError(f"{source} was scanned")

    monkeypatch.setattr(local, "_check_adopted", no_scan)
    outcome, job = env.deploy({"index.html": "v1", "a": {"b": {"c.css": "c{}"}}})

    assert outcome == "live" and env.live() == "v1"
    assert (job.file_count, job.bytes) == (2, 5)
    release = env.cdn.release_path(job.site_id, job.release)
    assert (release / "a" / "b" / "c.css").read_text() == "c{}"


def test_a_publish_directory_is_listed_alone(tmp_path, monkeypatch):
    env = Env(tmp_path, limits=LIMITS)
    monkeypatch.setattr(local, "_check_adopted", None)  # any call fails
    spec = {"ecstatic.toml": 'publish = "site"\n', "notes.md": "x", "site": {"index.html": "v1"}}
    outcome, job = env.deploy(spec)

    assert outcome == "live" and env.live() == "v1"
    assert (job.file_count, job.bytes) == (1, 2)
