"""The deploy pipeline's HTTP contract: credentials, deploys, logs, activation, previews."""

from __future__ import annotations

import hmac
from datetime import timedelta

import pytest

from services.core.auth import hash_token
from services.falcon_apps.api.deploys import DEPLOY_FIELDS

SHA = "0123456789abcdef0123456789abcdef01234567"


def create_site(client, user, name="blog"):
    response = client.simulate_post("/v1/sites", json={"name": name}, headers=user["headers"])
    assert response.status_code == 201, response.json
    return response.json


def credential_for(client, user, site_id):
    response = client.simulate_post(f"/v1/sites/{site_id}/credentials", headers=user["headers"])
    assert response.status_code == 201, response.json
    return {"Authorization": f"Bearer {response.json['credential']}"}


def queue(client, headers, site_id, context="production", branch="main", **extra):
    body = {"context": context, "branch": branch, "commit_sha": SHA, **extra}
    return client.simulate_post(f"/v1/sites/{site_id}/deploys", json=body, headers=headers)


def patch(client, headers, site_id, deploy_id, **body):
    path = f"/v1/sites/{site_id}/deploys/{deploy_id}"
    return client.simulate_patch(path, json=body, headers=headers)


def go_live(client, headers, site_id, deploy_id):
    for state in ("building", "publishing", "live"):
        assert patch(client, headers, site_id, deploy_id, state=state).status_code == 200
    path = f"/v1/sites/{site_id}/deploys/{deploy_id}/activate"
    response = client.simulate_post(path, headers=headers)
    assert response.status_code == 200, response.json
    return response.json


@pytest.fixture
def site(client, alice):
    return create_site(client, alice)


@pytest.fixture
def cred(client, alice, site):
    return credential_for(client, alice, site["id"])


# -- credentials --
def test_credential_is_random_prefixed_and_stored_only_hashed(client, config, store, alice, site):
    response = client.simulate_post(f"/v1/sites/{site['id']}/credentials", headers=alice["headers"])
    body = response.json
    assert response.status_code == 201 and body["credential"].startswith("ecsd_")
    assert body["site_id"] == site["id"] and body["expires_at"].endswith("Z")
    again = client.simulate_post(f"/v1/sites/{site['id']}/credentials", headers=alice["headers"])
    assert again.json["credential"] != body["credential"]
    store.close()
    content = b"".join(p.read_bytes() for p in config.api_db.parent.glob("*.sqlite3*"))
    assert hash_token(body["credential"]).encode() in content
    assert body["credential"].encode() not in content


def test_credential_works_on_its_sites_deploy_routes_only(client, alice, site, cred):
    deploy = queue(client, cred, site["id"]).json
    assert deploy["state"] == "queued"
    assert patch(client, cred, site["id"], deploy["id"], state="building").status_code == 200
    log = f"/v1/sites/{site['id']}/deploys/{deploy['id']}/log"
    assert client.simulate_post(log, json={"lines": ["x"]}, headers=cred).status_code == 204
    assert client.simulate_post(f"/v1/sites/{site['id']}/purge", headers=cred).status_code == 202
    # The git room lists the site's deploys to prune releases in the record's order.
    listed = client.simulate_get(f"/v1/sites/{site['id']}/deploys", headers=cred)
    assert [d["id"] for d in listed.json["deploys"]] == [deploy["id"]]
    for method, path in [
        ("GET", "/v1/sites"),
        ("POST", "/v1/sites"),
        ("GET", "/v1/user"),
        ("GET", f"/v1/sites/{site['id']}"),
        ("GET", log),
        ("POST", f"/v1/sites/{site['id']}/credentials"),
    ]:
        response = client.simulate_request(method, path, headers=cred, json={"name": "x"})
        assert response.status_code == 401, (method, path)
        assert response.json["message"] == "invalid token"


def test_credential_for_another_site_is_refused(client, alice, bob, site, cred):
    other = create_site(client, alice, "shop")
    assert queue(client, cred, other["id"]).status_code == 401
    bobs = create_site(client, bob, "bobs")
    assert queue(client, cred, bobs["id"]).status_code == 401
    response = client.simulate_post(f"/v1/sites/{bobs['id']}/credentials", headers=alice["headers"])
    assert response.status_code == 404


def test_expired_credential_says_so(client, clock, alice, site, cred):
    assert queue(client, cred, site["id"]).status_code == 201
    clock.now += timedelta(seconds=900)
    response = queue(client, cred, site["id"])
    assert response.status_code == 401 and "expired" in response.json["message"]
    fake = {"Authorization": "Bearer ecsd_" + "x" * 43}
    assert queue(client, fake, site["id"]).json["message"] == "invalid token"


def test_credentials_are_looked_up_by_hash_and_compared_in_constant_time(store, alice, monkeypatch):
    site = store.create_site(alice["id"], "blog", "blog.localhost")
    raw, _ = store.credentials.issue(alice["id"], site["id"], 900)
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(
        "services.core.auth.hmac.compare_digest", lambda a, b: calls.append(1) or real(a, b)
    )
    assert store.credentials.resolve(raw).site_id == site["id"]
    assert calls
    assert store.credentials.resolve(raw + "x") is None
    assert store.credentials.resolve(raw[:-1]) is None


def test_credential_lifetime_comes_from_config(tmp_path, store, clock, alice, registry):
    from falcon import testing

    from services.core.config import Config
    from services.core.metrics import HttpMetrics
    from services.falcon_apps.api.app import create_app

    config = Config.from_env(
        {"ECSTATIC_HOME": str(tmp_path), "ECSTATIC_DEPLOY_CREDENTIAL_SECONDS": "60"}
    )
    client = testing.TestClient(create_app(store, config, HttpMetrics(registry)))
    site = create_site(client, alice)
    body = client.simulate_post(
        f"/v1/sites/{site['id']}/credentials", headers=alice["headers"]
    ).json
    assert not store.credentials.resolve(body["credential"]).expired
    clock.now += timedelta(seconds=59)
    assert store.credentials.resolve(body["credential"]).expired
    assert Config.from_env({"ECSTATIC_HOME": str(tmp_path)}).deploy_credential_seconds == 900


# -- deploys --
def test_queued_deploy_has_every_field(client, alice, site, cred):
    response = queue(client, cred, site["id"], author="Ada <ada@example.org>", message="fix")
    assert response.status_code == 201
    deploy = response.json
    assert set(deploy) == {*DEPLOY_FIELDS, "current"}
    assert (deploy["number"], deploy["context"], deploy["branch"]) == (1, "production", "main")
    assert (deploy["hostname"], deploy["state"], deploy["current"]) == (
        "blog.localhost",
        "queued",
        False,
    )
    assert (deploy["author"], deploy["message"]) == ("Ada <ada@example.org>", "fix")
    assert deploy["step_seconds"] == {} and deploy["release"] is None
    path = f"/v1/sites/{site['id']}/deploys/{deploy['id']}"
    assert response.headers["location"] == path
    assert client.simulate_get(path, headers=alice["headers"]).json == deploy


def test_patch_moves_the_deploy_and_stamps_times(client, alice, site, cred):
    deploy = queue(client, cred, site["id"]).json
    building = patch(client, cred, site["id"], deploy["id"], state="building", step="build").json
    assert building["started_at"] is not None and building["finished_at"] is None
    done = patch(
        client,
        cred,
        site["id"],
        deploy["id"],
        state="publishing",
        step="publish",
        step_seconds={"checkout": 0.5, "build": 2},
        generator="hugo 0.111.3",
        file_count=3,
        bytes=100,
        release="r-0001",
    ).json
    assert done["step_seconds"] == {"checkout": 0.5, "build": 2.0}
    live = patch(
        client, cred, site["id"], deploy["id"], state="live", step_seconds={"publish": 1}
    ).json
    assert live["step_seconds"] == {"checkout": 0.5, "build": 2.0, "publish": 1.0}
    assert live["finished_at"] is not None and live["duration_seconds"] >= 0
    # Live is final: a retry of the same change is fine, anything else is 409.
    assert patch(client, cred, site["id"], deploy["id"], state="live").status_code == 200
    response = patch(client, cred, site["id"], deploy["id"], state="failed", reason="internal")
    assert response.status_code == 409 and response.json["error"] == "Conflict"
    assert patch(client, cred, site["id"], deploy["id"], bytes=5).status_code == 409


def test_failed_deploy_keeps_its_reason_and_is_final(client, site, cred):
    deploy = queue(client, cred, site["id"]).json
    patch(client, cred, site["id"], deploy["id"], state="building")
    failed = patch(
        client, cred, site["id"], deploy["id"], state="failed", reason="build_failed"
    ).json
    assert (failed["state"], failed["reason"]) == ("failed", "build_failed")
    assert patch(client, cred, site["id"], deploy["id"], state="building").status_code == 409


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "at least one"),
        ({"state": "done"}, "state must be one of"),
        ({"step": "deploy"}, "step must be one of"),
        ({"reason": "oops", "state": "failed"}, "reason must be one of"),
        ({"reason": "internal"}, "only for a deploy that fails"),
        ({"file_count": -1}, "file_count"),
        ({"bytes": True}, "bytes"),
        ({"step_seconds": {"build": -1}}, "step_seconds.build"),
        ({"step_seconds": {"lunch": 1}}, "keys must be steps"),
        ({"step_seconds": [1]}, "step_seconds must be an object"),
        ({"release": "../x"}, "release"),
        ({"generator": ""}, "generator"),
        ({"id": "x"}, "unknown field(s): id"),
    ],
)
def test_bad_patches_are_400(client, site, cred, body, message):
    deploy = queue(client, cred, site["id"]).json
    response = patch(client, cred, site["id"], deploy["id"], **body)
    assert response.status_code == 400 and message in response.json["message"], response.json


def test_illegal_transition_is_409(client, site, cred):
    deploy = queue(client, cred, site["id"]).json
    response = patch(client, cred, site["id"], deploy["id"], state="live")
    assert response.status_code == 409 and "queued to live" in response.json["message"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"context": "staging", "commit_sha": SHA}, "context"),
        ({"context": "preview", "commit_sha": SHA}, "branch"),
        ({"context": "preview", "branch": "a\nb", "commit_sha": SHA}, "control"),
        ({"context": "production", "commit_sha": "abc"}, "commit_sha"),
        ({"context": "production", "commit_sha": SHA, "author": 5}, "author"),
        ({"context": "production", "commit_sha": SHA, "state": "live"}, "unknown"),
    ],
)
def test_bad_new_deploys_are_400(client, site, cred, body, message):
    response = client.simulate_post(f"/v1/sites/{site['id']}/deploys", json=body, headers=cred)
    assert response.status_code == 400 and message in response.json["message"], response.json


def test_list_is_ordered_by_number_not_by_clock(client, clock, alice, site, cred):
    numbers = []
    for _ in range(4):
        numbers.append(queue(client, cred, site["id"]).json["number"])
        clock.now -= timedelta(hours=2)  # the wall clock jumping back changes nothing
    assert numbers == [1, 2, 3, 4]
    listed = client.simulate_get(f"/v1/sites/{site['id']}/deploys", headers=alice["headers"]).json
    assert [d["number"] for d in listed["deploys"]] == [4, 3, 2, 1]


def test_activate_moves_the_pointer_and_restore_moves_it_back(client, alice, site, cred):
    first = queue(client, cred, site["id"]).json
    shown = go_live(client, cred, site["id"], first["id"])
    assert shown["live_deploy"]["id"] == first["id"] and shown["live_deploy"]["current"]
    second = queue(client, cred, site["id"]).json
    # Not live yet: the site still serves the first one, and it cannot be activated.
    activate = f"/v1/sites/{site['id']}/deploys/{second['id']}/activate"
    response = client.simulate_post(activate, headers=cred)
    assert response.status_code == 409
    assert go_live(client, cred, site["id"], second["id"])["live_deploy"]["id"] == second["id"]
    # Restore with the user's own token.
    restore = f"/v1/sites/{site['id']}/deploys/{first['id']}/activate"
    restored = client.simulate_post(restore, headers=alice["headers"]).json
    assert restored["live_deploy"]["id"] == first["id"]
    listed = client.simulate_get(f"/v1/sites/{site['id']}/deploys", headers=alice["headers"]).json
    assert [(d["number"], d["current"]) for d in listed["deploys"]] == [(2, False), (1, True)]


def test_deploys_of_other_users_are_404(client, alice, bob, site, cred):
    deploy = queue(client, cred, site["id"]).json
    for method, path in [
        ("GET", f"/v1/sites/{site['id']}/deploys/{deploy['id']}"),
        ("PATCH", f"/v1/sites/{site['id']}/deploys/{deploy['id']}"),
        ("GET", f"/v1/sites/{site['id']}/deploys/{deploy['id']}/log"),
        ("POST", f"/v1/sites/{site['id']}/deploys/{deploy['id']}/activate"),
        ("POST", f"/v1/sites/{site['id']}/purge"),
    ]:
        response = client.simulate_request(
            method, path, headers=bob["headers"], json={"state": "failed"}
        )
        assert response.status_code == 404, (method, path)


# -- previews --
def test_preview_deploy_registers_its_hostname(client, alice, site, cred):
    deploy = queue(client, cred, site["id"], context="preview", branch="Feature/Login_Page").json
    assert deploy["hostname"] == "feature-login-page--blog.localhost"
    check = "/internal/hostnames/check"
    assert client.simulate_get(check, params={"domain": deploy["hostname"]}).status_code == 200
    hosts = client.simulate_get("/internal/hostmap").json["hosts"]
    assert hosts[deploy["hostname"]] == site["id"]
    go_live(client, cred, site["id"], deploy["id"])
    shown = client.simulate_get(f"/v1/sites/{site['id']}", headers=alice["headers"]).json
    assert shown["live_deploy"] is None  # a preview never touches production
    assert shown["previews"] == [
        {
            "branch": "Feature/Login_Page",
            "hostname": "feature-login-page--blog.localhost",
            "url": "http://feature-login-page--blog.localhost:8080/",
            "live_deploy_id": deploy["id"],
        }
    ]
    again = queue(client, cred, site["id"], context="preview", branch="Feature/Login_Page").json
    assert again["hostname"] == deploy["hostname"]
    twin = queue(client, cred, site["id"], context="preview", branch="feature-login-page").json
    assert twin["hostname"] != deploy["hostname"] and twin["hostname"].endswith("--blog.localhost")


def test_delete_preview_removes_hostname_and_pointer_but_keeps_records(client, alice, site, cred):
    deploy = queue(client, cred, site["id"], context="preview", branch="feature/x").json
    go_live(client, cred, site["id"], deploy["id"])
    response = client.simulate_delete(f"/v1/sites/{site['id']}/previews/feature/x", headers=cred)
    assert response.status_code == 204
    check = "/internal/hostnames/check"
    assert client.simulate_get(check, params={"domain": deploy["hostname"]}).status_code == 404
    shown = client.simulate_get(f"/v1/sites/{site['id']}", headers=alice["headers"]).json
    assert shown["previews"] == []
    kept = client.simulate_get(
        f"/v1/sites/{site['id']}/deploys/{deploy['id']}", headers=alice["headers"]
    )
    assert kept.json["context"] == "preview" and kept.json["current"] is False
    again = client.simulate_delete(f"/v1/sites/{site['id']}/previews/feature/x", headers=cred)
    assert again.status_code == 404
    activate = f"/v1/sites/{site['id']}/deploys/{deploy['id']}/activate"
    assert client.simulate_post(activate, headers=cred).status_code == 409


# -- logs --
def test_log_append_and_read(client, alice, site, cred):
    deploy = queue(client, cred, site["id"]).json
    path = f"/v1/sites/{site['id']}/deploys/{deploy['id']}/log"
    for lines in (["one", "two"], ["three"]):
        assert client.simulate_post(path, json={"lines": lines}, headers=cred).status_code == 204
    shown = client.simulate_get(path, headers=alice["headers"]).json
    assert shown == {
        "state": "queued",
        "lines": ["one", "two", "three"],
        "truncated": False,
        "omitted_lines": 0,
    }
    bad = client.simulate_post(path, json={"lines": "x"}, headers=cred)
    assert bad.status_code == 400


def test_log_cap_keeps_the_head_and_the_last_lines(tmp_path, alice):
    from services.falcon_apps.api.logs import LogLimits
    from services.falcon_apps.api.store import MetadataStore

    limits = LogLimits(
        max_lines=50, max_bytes=10_000, head_lines=10, head_bytes=5_000, max_line_chars=20
    )
    store = MetadataStore(tmp_path / "db.sqlite3", log_limits=limits)
    user, _ = store.create_user("alice")
    site = store.create_site(user["id"], "blog", "blog.localhost")
    fields = {
        "context": "production",
        "branch": None,
        "commit_sha": SHA,
        "author": None,
        "message": None,
    }
    deploy = store.deploys.create(user["id"], site["id"], fields, "localhost")
    for start in range(0, 200, 7):
        store.logs.append(
            user["id"],
            site["id"],
            deploy["id"],
            [f"line {n}" for n in range(start, min(start + 7, 200))],
        )
    store.logs.append(user["id"], site["id"], deploy["id"], ["error: " + "x" * 100])
    shown = store.logs.read(user["id"], site["id"], deploy["id"])
    assert shown["truncated"] is True and len(shown["lines"]) == 50
    assert shown["lines"][:10] == [f"line {n}" for n in range(10)]
    assert shown["lines"][-1] == "error: " + "x" * 12 + "…"  # the line cap, 20 characters
    assert shown["lines"][-2] == "line 199"
    assert shown["lines"][10:-1] == [f"line {n}" for n in range(161, 200)]
    assert shown["omitted_lines"] == 201 - 50


def test_log_cap_by_bytes(tmp_path):
    from services.falcon_apps.api.logs import LogLimits
    from services.falcon_apps.api.store import MetadataStore

    limits = LogLimits(
        max_lines=1000, max_bytes=1000, head_lines=100, head_bytes=200, max_line_chars=100
    )
    store = MetadataStore(tmp_path / "db.sqlite3", log_limits=limits)
    user, _ = store.create_user("alice")
    site = store.create_site(user["id"], "blog", "blog.localhost")
    fields = {
        "context": "production",
        "branch": None,
        "commit_sha": SHA,
        "author": None,
        "message": None,
    }
    deploy = store.deploys.create(user["id"], site["id"], fields, "localhost")
    lines = [f"{n:03d}" + "y" * 96 for n in range(30)]  # 101 bytes each with the newline
    store.logs.append(user["id"], site["id"], deploy["id"], lines)
    kept = store.logs.read(user["id"], site["id"], deploy["id"])["lines"]
    assert sum(len(line) + 1 for line in kept) <= 1000
    assert kept[0] == lines[0] and kept[-1] == lines[-1]


# -- purge --
def test_purge_calls_the_injected_purger(client, purger, site, cred):
    response = client.simulate_post(f"/v1/sites/{site['id']}/purge", headers=cred)
    assert response.status_code == 202
    assert [s["id"] for s in purger.sites] == [site["id"]]
    assert purger.sites[0]["hostnames"] == ["blog.localhost"]


def test_failing_purger_is_503(store, config, registry, alice):
    from falcon import testing

    from services.core.metrics import HttpMetrics
    from services.falcon_apps.api.app import create_app

    class Broken:
        def purge(self, site):
            raise ConnectionError("edge down")

    client = testing.TestClient(create_app(store, config, HttpMetrics(registry), purger=Broken()))
    site = create_site(client, alice)
    response = client.simulate_post(f"/v1/sites/{site['id']}/purge", headers=alice["headers"])
    assert response.status_code == 503 and "ConnectionError" in response.json["message"]


def test_default_purger_is_a_no_op(store, config, registry, alice):
    from falcon import testing

    from services.core.metrics import HttpMetrics
    from services.falcon_apps.api.app import create_app

    client = testing.TestClient(create_app(store, config, HttpMetrics(registry)))
    site = create_site(client, alice)
    response = client.simulate_post(f"/v1/sites/{site['id']}/purge", headers=alice["headers"])
    assert response.status_code == 202
