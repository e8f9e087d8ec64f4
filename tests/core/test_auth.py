import pytest
import requests

from services.core.auth import SiteAuthorizer, bearer_token, hash_token, new_token, tokens_equal
from services.core.errors import NotFound, Unauthorized, Unavailable


def test_tokens_are_random_and_hashed():
    a, b = new_token(), new_token()
    assert a != b and a.startswith("ecs_") and len(a) > 40
    assert hash_token(a) != a and len(hash_token(a)) == 64
    assert tokens_equal(hash_token(a), hash_token(a))
    assert not tokens_equal(hash_token(a), hash_token(b))


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer  ", None),
        ("Basic abc", None),
        ("Bearer abc", "abc"),
        ("bearer abc ", "abc"),
    ],
)
def test_bearer_token(header, token):
    assert bearer_token(header) == token


class FakeResponse:
    def __init__(self, status, body=None):
        self.status_code = status
        self._body = body

    def json(self):
        return self._body


class FakeSession:
    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def get(self, url, headers, timeout):
        self.calls.append((url, headers["Authorization"]))
        answer = self.answers[headers["Authorization"].split()[1]]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_authorizer_maps_answers_and_caches():
    now = [0.0]
    session = FakeSession(
        {
            "good": FakeResponse(200, {"id": "s1"}),
            "bad": FakeResponse(401),
            "other": FakeResponse(404),
            "down": requests.ConnectionError("refused"),
        }
    )
    auth = SiteAuthorizer("http://api", cache_seconds=5, session=session, clock=lambda: now[0])
    assert auth.site("good", "s1") == {"id": "s1"}
    assert auth.site("good", "s1") == {"id": "s1"}
    assert len(session.calls) == 1  # cached
    with pytest.raises(Unauthorized):
        auth.site("bad", "s1")
    with pytest.raises(NotFound):
        auth.site("other", "s1")
    with pytest.raises(Unauthorized):
        auth.site(None, "s1")
    with pytest.raises(Unavailable):
        auth.site("down", "s1")
    now[0] = 10.0
    auth.site("good", "s1")
    assert len(session.calls) == 5  # expired entry asked again
    assert session.calls[0][0] == "http://api/v1/sites/s1"


@pytest.mark.parametrize("token", ["a\nb", "€uro", "a b", "x" * 300])
def test_authorizer_refuses_impossible_tokens_without_asking(token):
    session = FakeSession({})
    with pytest.raises(Unauthorized):
        SiteAuthorizer("http://api", session=session).site(token, "s1")
    assert session.calls == []
