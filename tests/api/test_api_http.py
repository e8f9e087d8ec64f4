"""The api's HTTP contract through Falcon's TestClient, on a real tmp SQLite store."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
from falcon import testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core.runtime import Context
from services.falcon_apps.api.app import build
from services.falcon_apps.api.deploys import DEPLOY_FIELDS
from services.falcon_apps.api.store import MetadataStore

SHA = "0123456789abcdef0123456789abcdef01234567"
PROTECTED = [
    ("GET", "/v1/sites"),
    ("POST", "/v1/sites"),
    ("GET", "/v1/sites/0123456789abcdef"),
    ("GET", "/v1/sites/0123456789abcdef/deploys"),
    ("POST", "/v1/sites/0123456789abcdef/deploys"),
    ("GET", "/v1/user"),
]


def create_site(client, user, name="blog"):
    response = client.simulate_post("/v1/sites", json={"name": name}, headers=user["headers"])
    assert response.status_code == 201, response.json
    return response.json


def post_deploy(client, user, site_id, **overrides):
    body = {"commit_sha": SHA, "release": "r1", "file_count": 3, "bytes": 1024, **overrides}
    return client.simulate_post(f"/v1/sites/{site_id}/deploys", json=body, headers=user["headers"])


def assert_error(response, status, error, message=None):
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert response.json["error"] == error
    if message is not None:
        assert message in response.json["message"]


# -- authentication --
@pytest.mark.parametrize("method, path", PROTECTED)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer ecs_wrong", "Basic YWxpY2U6c2VjcmV0", "Bearer ", "ecs_x"]
)
def test_protected_routes_answer_401_without_a_valid_token(
    client, alice, method, path, authorization
):
    headers = {"Authorization": authorization} if authorization else {}
    response = client.simulate_request(method, path, headers=headers, json={"name": "x"})
    assert_error(response, 401, "Unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_401_comes_before_body_checks(client):
    response = client.simulate_post("/v1/sites", body=b"x" * 100_000)
    assert_error(response, 401, "Unauthorized", "missing bearer token")


def test_current_user(client, alice, bob):
    response = client.simulate_get("/v1/user", headers=alice["headers"])
    assert response.status_code == 200
    assert response.json == {"id": alice["id"], "name": "alice"}
    assert client.simulate_get("/v1/user", headers=bob["headers"]).json["name"] == "bob"


def test_scheme_is_case_insensitive(client, alice):
    headers = {"Authorization": f"bearer {alice['token']}"}
    assert client.simulate_get("/v1/user", headers=headers).status_code == 200


# -- sites --
def test_create_site_answers_201_with_site_json(client, config, alice):
    response = client.simulate_post("/v1/sites", json={"name": "blog"}, headers=alice["headers"])
    assert response.status_code == 201
    site = response.json
    assert set(site) == {
        "id",
        "name",
        "url",
        "git_url",
        "hostnames",
        "created_at",
        "current_deploy",
        "live_deploy",
        "previews",
    }
    assert re.fullmatch(r"[0-9a-f]{16}", site["id"])
    assert site["name"] == "blog"
    assert site["url"] == config.site_url("blog") == "http://blog.localhost:8080/"
    assert site["git_url"] == config.git_url(site["id"])
    assert site["hostnames"] == [config.site_hostname("blog")] == ["blog.localhost"]
    assert datetime.fromisoformat(site["created_at"]).utcoffset().total_seconds() == 0
    assert site["current_deploy"] is None and site["live_deploy"] is None
    assert site["previews"] == []
    assert response.headers["location"] == f"/v1/sites/{site['id']}"


def test_list_and_get_show_only_the_callers_sites(client, alice, bob):
    blog = create_site(client, alice, "blog")
    shop = create_site(client, bob, "shop")
    assert client.simulate_get("/v1/sites", headers=alice["headers"]).json == {"sites": [blog]}
    assert client.simulate_get("/v1/sites", headers=bob["headers"]).json == {"sites": [shop]}
    assert client.simulate_get(f"/v1/sites/{blog['id']}", headers=alice["headers"]).json == blog


def test_another_users_site_is_404(client, alice, bob):
    blog = create_site(client, alice)
    for path in (f"/v1/sites/{blog['id']}", f"/v1/sites/{blog['id']}/deploys"):
        assert_error(client.simulate_get(path, headers=bob["headers"]), 404, "NotFound")


@pytest.mark.parametrize("site_id", ["ffffffffffffffff", "nope", "%27%20OR%201%3D1"])
def test_missing_site_is_404(client, alice, site_id):
    assert_error(
        client.simulate_get(f"/v1/sites/{site_id}", headers=alice["headers"]), 404, "NotFound"
    )


def test_taken_name_is_409_for_anyone(client, alice, bob):
    create_site(client, alice, "blog")
    for user in (alice, bob):
        response = client.simulate_post("/v1/sites", json={"name": "blog"}, headers=user["headers"])
        assert_error(response, 409, "Conflict", "taken")
    assert client.simulate_get("/v1/sites", headers=bob["headers"]).json == {"sites": []}


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "not valid JSON"),
        (b"", "JSON object"),
        (b'["blog"]', "JSON object"),
        (b'{"name": 42}', "name must be a string"),
        (b'{"name": null}', "name must be a string"),
        (b"{}", "missing field(s): name"),
        (b'{"name": "blog", "owner": "x"}', "unknown field(s): owner"),
        (b'{"name": "Blog"}', "name must be 1-63"),
        (b'{"name": "-blog"}', "name must be 1-63"),
        (b'{"name": "blog\\n"}', "name must be 1-63"),
        (b'{"name": "my.blog"}', "name must be 1-63"),
        (b'{"name": "' + b"a" * 64 + b'"}', "name must be 1-63"),
    ],
)
def test_bad_site_bodies_are_400(client, alice, body, message):
    response = client.simulate_post("/v1/sites", body=body, headers=alice["headers"])
    assert_error(response, 400, "BadRequest", message)
    assert client.simulate_get("/v1/sites", headers=alice["headers"]).json == {"sites": []}


def test_oversized_body_is_400(client, alice):
    body = b'{"name": "blog", "pad": "' + b"x" * 70_000 + b'"}'
    response = client.simulate_post("/v1/sites", body=body, headers=alice["headers"])
    assert_error(response, 400, "BadRequest", "limit is 65536")


@settings(
    max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(["name", "x"]), st.none() | st.integers() | st.text(max_size=70)
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_arbitrary_site_bodies_never_cause_a_server_error(client, alice, body):
    response = client.simulate_post("/v1/sites", body=body, headers=alice["headers"])
    assert response.status_code in (201, 400, 409)
    assert "message" in response.json or response.status_code == 201


# -- deploys --
def test_old_recorder_body_records_a_live_deploy_that_becomes_current(client, alice):
    # The 0.1.0 body services/git/recorder.py sends: a production deploy, live now.
    site = create_site(client, alice)
    response = post_deploy(client, alice, site["id"])
    assert response.status_code == 201
    first = response.json
    assert set(first) == {*DEPLOY_FIELDS, "current"}
    assert re.fullmatch(r"[0-9a-f]{16}", first["id"])
    assert (first["site_id"], first["commit_sha"], first["release"]) == (site["id"], SHA, "r1")
    assert (first["file_count"], first["bytes"], first["state"]) == (3, 1024, "live")
    assert (first["number"], first["context"], first["hostname"]) == (
        1,
        "production",
        "blog.localhost",
    )
    assert first["current"] is True
    assert response.headers["location"] == f"/v1/sites/{site['id']}/deploys/{first['id']}"
    shown = client.simulate_get(f"/v1/sites/{site['id']}", headers=alice["headers"]).json
    assert shown["current_deploy"] == shown["live_deploy"] == first

    second = post_deploy(client, alice, site["id"], release="r2", file_count=0, bytes=0).json
    assert second["number"] == 2
    shown = client.simulate_get(f"/v1/sites/{site['id']}", headers=alice["headers"]).json
    assert shown["live_deploy"] == second
    listed = client.simulate_get("/v1/sites", headers=alice["headers"]).json["sites"]
    assert listed[0]["live_deploy"] == second
    history = client.simulate_get(f"/v1/sites/{site['id']}/deploys", headers=alice["headers"])
    assert history.status_code == 200
    assert history.json == {"deploys": [second, {**first, "current": False}]}


def test_deploy_to_another_users_site_is_404_and_records_nothing(client, alice, bob):
    site = create_site(client, alice)
    assert_error(post_deploy(client, bob, site["id"]), 404, "NotFound")
    assert_error(post_deploy(client, alice, "ffffffffffffffff"), 404, "NotFound")
    assert client.simulate_get(
        f"/v1/sites/{site['id']}/deploys", headers=alice["headers"]
    ).json == {"deploys": []}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"commit_sha": "abc"}, "commit_sha"),
        ({"release": "../../etc"}, "release"),
        ({"file_count": -1}, "file_count"),
        ({"bytes": "10"}, "bytes"),
        ({"bytes": 1.0}, "bytes"),
        ({"status": "live"}, "unknown field(s): status"),
    ],
)
def test_bad_deploy_bodies_are_400(client, alice, overrides, message):
    site = create_site(client, alice)
    assert_error(post_deploy(client, alice, site["id"], **overrides), 400, "BadRequest", message)


def test_bad_deploy_json_is_400(client, alice):
    site = create_site(client, alice)
    response = client.simulate_post(
        f"/v1/sites/{site['id']}/deploys", body=b"nope", headers=alice["headers"]
    )
    assert_error(response, 400, "BadRequest", "not valid JSON")
    big = client.simulate_post(
        f"/v1/sites/{site['id']}/deploys", body=b" " * 70_000, headers=alice["headers"]
    )
    assert_error(big, 400, "BadRequest", "limit")


# -- hostmap and the rest --
def test_hostmap_is_public_and_lists_every_site(client, alice, bob):
    assert client.simulate_get("/internal/hostmap").json == {"hosts": {}}
    blog = create_site(client, alice, "blog")
    shop = create_site(client, bob, "shop")
    response = client.simulate_get("/internal/hostmap")
    assert response.status_code == 200
    assert response.json == {"hosts": {"blog.localhost": blog["id"], "shop.localhost": shop["id"]}}


def test_hostname_check_answers_caddys_on_demand_tls_question(client, alice):
    create_site(client, alice, "blog")
    check = "/internal/hostnames/check"
    assert client.simulate_get(check, params={"domain": "blog.localhost"}).status_code == 200
    # Browsers lowercase hosts; Caddy passes what the client sent in the SNI.
    assert client.simulate_get(check, params={"domain": "BLOG.localhost"}).status_code == 200
    # The api's own host (from ECSTATIC_PUBLIC_URL) gets a certificate too.
    assert client.simulate_get(check, params={"domain": "localhost"}).status_code == 200
    for unknown in ("shop.localhost", "blog.localhost.evil.example", "example.org"):
        response = client.simulate_get(check, params={"domain": unknown})
        assert response.status_code == 404, unknown
        assert response.json["error"] == "NotFound"
    assert client.simulate_get(check).status_code == 400


def test_unknown_routes_and_methods_answer_json(client, alice):
    # Falcon's own errors keep its titles ("404 Not Found"); the shape is still JSON.
    for response, status in (
        (client.simulate_get("/v1/nothing", headers=alice["headers"]), 404),
        (client.simulate_delete("/v1/sites", headers=alice["headers"]), 405),
    ):
        assert response.status_code == status
        assert set(response.json) == {"error", "message"}


def test_requests_are_counted_by_route_template(client, registry, alice):
    site = create_site(client, alice)
    client.simulate_get(f"/v1/sites/{site['id']}", headers=alice["headers"])
    client.simulate_get("/v1/sites/ffffffffffffffff", headers=alice["headers"])
    labels = {"service": "api", "route": "/v1/sites/{site_id}", "method": "GET"}
    for status in ("200", "404"):
        sample = registry.get_sample_value(
            "ecstatic_http_requests_total", {**labels, "status": status}
        )
        assert sample == 1


# -- build(ctx) --
def test_build_mounts_the_api_on_the_config_database(config):
    mount = build(Context(config))
    assert mount.name == "api"
    for path in ("/v1/sites", "/v1/user", "/internal/hostmap"):
        assert mount.paths.match(path)
    for path in ("/git/x.git/info/refs", "/v1", "/metrics", "/healthz"):
        assert not mount.paths.match(path)
    assert mount.healthy() is True

    # What `ecstatic admin create-user` does, from its own handle on the same file.
    _, token = MetadataStore(config.api_db).create_user("carol")
    client = testing.TestClient(mount.app)
    response = client.simulate_get("/v1/user", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.json["name"] == "carol"
