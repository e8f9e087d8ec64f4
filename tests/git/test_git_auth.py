import base64

import pytest
from git_kit import make_site

from services.git.auth import ENV_SITE, ENV_SITE_ID, ENV_TOKEN, BasicAuth, basic_credentials

SITE_ID = "0123456789abcdef"


class StartResponse:
    def __init__(self):
        self.status = None
        self.headers = {}

    def __call__(self, status, headers, exc_info=None):
        self.status = status
        self.headers = dict(headers)
        return lambda data: None


class Inner:
    def __init__(self):
        self.environ = None

    def __call__(self, environ, start_response):
        self.environ = environ
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"git"]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def call(app, path=f"/git/{SITE_ID}.git/info/refs", authorization=None):
    environ = {
        "PATH_INFO": path,
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": "service=git-receive-pack",
    }
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    start = StartResponse()
    body = b"".join(app(environ, start))
    return start, body.decode()


@pytest.fixture
def app(authorizer):
    authorizer.add("good", make_site(SITE_ID, "blog"))
    inner = Inner()
    wrapper = BasicAuth(inner, authorizer)
    wrapper.inner = inner
    return wrapper


def assert_text(start):
    assert start.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert int(start.headers["Content-Length"]) > 0


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer good",
        "Basic",
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"nocolon").decode(),
        basic("x", ""),
        "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
    ],
)
def test_missing_or_malformed_credentials_ask_for_basic_auth(app, authorizer, header):
    start, body = call(app, authorization=header)
    assert start.status == "401 Unauthorized"
    assert start.headers["WWW-Authenticate"] == 'Basic realm="ecstatic"'
    assert body == "authentication required: use your Ecstatic API token as the password\n"
    assert_text(start)
    assert app.inner.environ is None
    assert authorizer.calls == []  # no api round trip without a token


def test_wrong_token_is_401_with_a_challenge(app):
    start, body = call(app, authorization=basic("x", "bad"))
    assert start.status == "401 Unauthorized"
    assert "WWW-Authenticate" in start.headers
    assert body == "invalid token: check your Ecstatic API token\n"
    assert app.inner.environ is None


def test_someone_elses_site_is_404(app, authorizer):
    authorizer.add("other", make_site("fedcba9876543210", "theirs"))
    start, body = call(app, authorization=basic("x", "other"))
    assert start.status == "404 Not Found"
    assert body == f"site {SITE_ID} not found, or it is not yours\n"
    assert_text(start)
    assert "WWW-Authenticate" not in start.headers


def test_api_down_is_503(app, authorizer):
    authorizer.down = True
    start, body = call(app, authorization=basic("x", "good"))
    assert start.status == "503 Service Unavailable"
    assert "unavailable" in body
    assert app.inner.environ is None


@pytest.mark.parametrize("user", ["x", "", "anybody", "good"])
def test_good_token_passes_with_any_user_name(app, user):
    start, body = call(app, authorization=basic(user, "good"))
    assert (start.status, body) == ("200 OK", "git")
    environ = app.inner.environ
    assert environ[ENV_SITE_ID] == SITE_ID
    assert environ[ENV_SITE]["hostnames"] == ["blog.localhost"]
    assert environ[ENV_TOKEN] == "good"


def test_password_may_contain_colons(app, authorizer):
    authorizer.add("a:b", make_site(SITE_ID, "blog"))
    start, _ = call(app, authorization=basic("u", "a:b"))
    assert start.status == "200 OK"


@pytest.mark.parametrize(
    "path",
    [
        "/git/../etc/passwd",
        f"/git/{SITE_ID}.git",
        "/git/0123456789ABCDEF.git/info/refs",
        "/git/0123456789abcde.git/info/refs",
        "/git/0123456789abcdef0.git/info/refs",
        f"/git/{SITE_ID}/info/refs",
        "/git/..%2f.git/info/refs",
        f"/other/{SITE_ID}.git/info/refs",
        "",
    ],
)
def test_paths_that_name_no_site_are_404_before_auth(app, authorizer, path):
    start, body = call(app, path=path, authorization=basic("x", "good"))
    assert start.status == "404 Not Found"
    assert "git URLs look like /git/<site id>.git" in body
    assert authorizer.calls == []
    assert app.inner.environ is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("Basic " + base64.b64encode(b"u:p").decode(), ("u", "p")),
        ("basic " + base64.b64encode(b"u:p:q").decode(), ("u", "p:q")),
        ("Basic " + base64.b64encode(b":tok").decode(), ("", "tok")),
        ("Bearer tok", None),
        ("Basic ====", None),
    ],
)
def test_basic_credentials(header, expected):
    assert basic_credentials(header) == expected
