"""SiteLocks (kept from the Deployer's tests) and DeployApi, the git room's api client."""

import threading
import time

import pytest
import requests

from services.core.errors import Conflict, NotFound, Unauthorized, Unavailable
from services.git.deploy_api import DeployApi
from services.git.locks import LockTimeout, SiteLocks

SITE_ID = "0123456789abcdef"


def test_site_locks_exclude_each_other_across_threads(tmp_path):
    locks = SiteLocks(tmp_path, timeout=5, poll=0.005)
    inside = []
    overlap = []

    def work(n):
        with locks.hold(SITE_ID):
            inside.append(n)
            if len(inside) > 1:
                overlap.append(n)
            time.sleep(0.01)
            inside.remove(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlap == []


def test_site_locks_time_out_and_are_released(tmp_path):
    ticks = iter(range(100))
    locks = SiteLocks(tmp_path, timeout=3, clock=lambda: next(ticks), sleep=lambda s: None)
    with locks.hold(SITE_ID):
        with pytest.raises(LockTimeout):
            with locks.hold(SITE_ID):
                pass
        with locks.hold("other"):  # other sites are independent
            pass
    with locks.hold(SITE_ID):  # released after the block
        pass


class FakeResponse:
    def __init__(self, status, body=None):
        self.status_code = status
        self._body = body
        self.content = b"" if body is None else b"{}"

    def json(self):
        if self._body is None:
            raise ValueError("no json")
        return self._body


class FakeSession:
    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    def request(self, method, url, json, headers, timeout):
        self.calls.append((method, url, json, headers))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_the_pushers_token_buys_a_credential_and_only_the_credential_travels_on():
    session = FakeSession(FakeResponse(201, {"credential": "ecsd_x"}))
    api = DeployApi("http://api:1/", session=session)
    assert api.credential("ecs_tok", SITE_ID) == "ecsd_x"
    session.answer = FakeResponse(201, {"id": "d1", "state": "queued"})
    body = {"context": "production", "branch": "main", "commit_sha": "a" * 40}
    assert api.create("ecsd_x", SITE_ID, body) == {"id": "d1", "state": "queued"}
    session.answer = FakeResponse(200, {"deploys": [{"id": "d1"}]})
    assert api.list("ecsd_x", SITE_ID) == [{"id": "d1"}]
    session.answer = FakeResponse(204)
    api.remove_preview("ecsd_x", SITE_ID, "feature/x")
    assert [(m, u, h) for m, u, _, h in session.calls] == [
        (
            "POST",
            f"http://api:1/v1/sites/{SITE_ID}/credentials",
            {"Authorization": "Bearer ecs_tok"},
        ),
        ("POST", f"http://api:1/v1/sites/{SITE_ID}/deploys", {"Authorization": "Bearer ecsd_x"}),
        ("GET", f"http://api:1/v1/sites/{SITE_ID}/deploys", {"Authorization": "Bearer ecsd_x"}),
        (
            "DELETE",
            f"http://api:1/v1/sites/{SITE_ID}/previews/feature%2Fx",
            {"Authorization": "Bearer ecsd_x"},
        ),
    ]
    assert session.calls[1][2] == body


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        (
            FakeResponse(401, {"error": "Unauthorized", "message": "invalid token"}),
            Unauthorized,
            "invalid token",
        ),
        (FakeResponse(404, {"error": "NotFound", "message": "no site"}), NotFound, "no site"),
        (FakeResponse(409, {"error": "Conflict", "message": "final"}), Conflict, "final"),
        (FakeResponse(500), Unavailable, "500"),
        (requests.ConnectionError("down"), Unavailable, "ConnectionError"),
    ],
)
def test_api_errors_are_mapped(answer, error, text):
    api = DeployApi("http://api:1", session=FakeSession(answer))
    with pytest.raises(error, match=text):
        api.update("ecsd_x", SITE_ID, "d1", {"state": "building"})
