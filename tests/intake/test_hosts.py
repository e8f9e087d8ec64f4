import json

import pytest
import requests

from services.intake.hosts import HostResolver, HostsUnavailable
from services.intake.model import RetryLater


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeResponse:
    def __init__(self, payload, status=200):
        self._payload, self.status_code = payload, status

    def raise_for_status(self):
        if self.status_code >= 400:
            raise requests.HTTPError(str(self.status_code))

    def json(self):
        if isinstance(self._payload, Exception):
            raise self._payload
        return self._payload


class FakeApi:
    def __init__(self, hosts=None):
        self.hosts = dict(hosts or {})
        self.down = False
        self.calls = []

    def get(self, url, timeout):
        self.calls.append(url)
        if self.down:
            raise requests.ConnectionError("refused")
        return FakeResponse({"hosts": dict(self.hosts)})


@pytest.fixture
def clock():
    return Clock()


def resolver(api, tmp_path, clock):
    return HostResolver("http://api:1/", tmp_path, session=api, clock=clock)


def test_known_host_resolved_and_cached(tmp_path, clock):
    api = FakeApi({"blog.localhost": "s1"})
    hosts = resolver(api, tmp_path, clock)
    assert hosts.site_id("Blog.localhost:8080") == "s1"
    assert hosts.site_id("blog.localhost") == "s1"
    assert api.calls == ["http://api:1/internal/hostmap"]


def test_unknown_host_with_fresh_map_is_none_and_refresh_is_rate_limited(tmp_path, clock):
    api = FakeApi({"a.localhost": "s1"})
    hosts = resolver(api, tmp_path, clock)
    assert hosts.site_id("evil.example") is None
    assert hosts.site_id("new.localhost") is None
    assert len(api.calls) == 1  # second miss within 2 s: no new request
    api.hosts["new.localhost"] = "s2"
    clock.now += 2.1
    assert hosts.site_id("new.localhost") == "s2"
    assert len(api.calls) == 2


def test_api_down_means_retry_later_for_unknown_hosts_only(tmp_path, clock):
    api = FakeApi({"a.localhost": "s1"})
    hosts = resolver(api, tmp_path, clock)
    assert hosts.site_id("a.localhost") == "s1"
    api.down = True
    clock.now += 5
    with pytest.raises(HostsUnavailable) as caught:
        hosts.site_id("b.localhost")
    assert isinstance(caught.value, RetryLater)
    assert hosts.site_id("a.localhost") == "s1"  # known hosts keep working
    with pytest.raises(HostsUnavailable):
        hosts.site_id("b.localhost")  # still down (no new request within 2 s)
    api.down = False
    api.hosts["b.localhost"] = "s2"
    clock.now += 2.1
    assert hosts.site_id("b.localhost") == "s2"


def test_hit_refreshes_when_old(tmp_path, clock):
    api = FakeApi({"a.localhost": "s1"})
    hosts = resolver(api, tmp_path, clock)
    hosts.site_id("a.localhost")
    clock.now += 61
    api.hosts = {}
    assert hosts.site_id("a.localhost") is None  # the site went away
    assert len(api.calls) == 2


def test_restart_while_api_down_uses_saved_map(tmp_path, clock):
    api = FakeApi({"a.localhost": "s1"})
    resolver(api, tmp_path, clock).site_id("a.localhost")
    assert json.loads((tmp_path / "hostmap.json").read_text()) == {"hosts": {"a.localhost": "s1"}}
    api.down = True
    restarted = resolver(api, tmp_path, clock)
    assert restarted.site_id("a.localhost") == "s1"
    with pytest.raises(HostsUnavailable):
        restarted.site_id("other.localhost")


@pytest.mark.parametrize(
    "payload", [{"nope": 1}, {"hosts": [1]}, ValueError("not json"), {"hosts": "x"}]
)
def test_malformed_hostmap_counts_as_unavailable(tmp_path, clock, payload):
    class Bad(FakeApi):
        def get(self, url, timeout):
            return FakeResponse(payload)

    with pytest.raises(HostsUnavailable):
        resolver(Bad(), tmp_path, clock).site_id("a.localhost")


def test_http_error_is_unavailable_and_corrupt_saved_map_ignored(tmp_path, clock):
    (tmp_path / "hostmap.json").write_text("{corrupt")

    class Failing(FakeApi):
        def get(self, url, timeout):
            return FakeResponse({}, status=503)

    with pytest.raises(HostsUnavailable):
        resolver(Failing(), tmp_path, clock).site_id("a.localhost")


def test_a_line_for_a_site_made_after_the_last_fetch_waits_for_the_next_one(tmp_path, clock):
    api = FakeApi({"a.localhost": "s1"})
    hosts = resolver(api, tmp_path, clock)
    assert hosts.site_id("a.localhost") == "s1"
    clock.now += 1.0  # the site is created, its first line arrives within 2 s of the fetch
    api.hosts["new.localhost"] = "s2"
    arrived = clock.now
    with pytest.raises(HostsUnavailable):
        hosts.site_id("new.localhost", arrived)  # held, not dropped as a stranger
    clock.now += 2.0
    assert hosts.site_id("new.localhost", arrived) == "s2"
    # A stranger is dropped once a map fetched after its line arrived lacks it.
    with pytest.raises(HostsUnavailable):
        hosts.site_id("evil.example", clock.now + 0.5)
    assert hosts.site_id("evil.example", arrived) is None
