"""Unit tests for the hardening: deep trees and configs, crashing hooks, log redaction."""

import io
import json
import logging
import logging.config

import pytest
from dulwich.objects import Blob, Commit, Tree
from git_kit import DIR, build_commit

from services.core.logs import RedactingFilter, logging_dict, redact
from services.git.checkout import DeployRejected, Limits, plan_checkout
from services.git.receive import EchoingReceivePackHandler

TOKEN = "ecs_" + "A1b2C3d4" * 5
LIMITS = Limits(max_files=5000, max_bytes=10**6)


def test_a_thousand_deep_tree_is_refused_without_recursion(store):
    blob = Blob.from_string(b"x")
    store.add_object(blob)
    tree = Tree()
    tree.add(b"index.html", 0o100644, blob.id)
    store.add_object(tree)
    for _ in range(1000):
        parent = Tree()
        parent.add(b"d", DIR, tree.id)
        store.add_object(parent)
        tree = parent
    commit = Commit()
    commit.tree = tree.id
    commit.author = commit.committer = b"T <t@e>"
    commit.author_time = commit.commit_time = 0
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = b"deep"
    store.add_object(commit)
    with pytest.raises(DeployRejected, match="nested more than 32 deep"):
        plan_checkout(store, commit.id, LIMITS)


def test_nesting_up_to_the_limit_is_fine(store):
    spec = {"index.html": "x"}
    for _ in range(31):
        spec = {"d": spec}
    sha = build_commit(store, spec)
    assert plan_checkout(store, sha, LIMITS).files[0][0] == "d/" * 31 + "index.html"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("x = " + "[" * 5000 + "]" * 5000, r"nests arrays or tables 5000 deep \(limit 8\)"),
        ("x = " + "{a = " * 3000 + "1" + "}" * 3000, r"nests arrays or tables 3000 deep"),
        # Dotted keys nest tables too; parse_config refuses the unknown top key first.
        ("a" + ".a" * 5000 + " = 1", r"unknown key 'a' \(known: build, publish\)"),
    ],
)
def test_deeply_nested_config_is_a_clear_rejection(store, toml, message):
    sha = build_commit(store, {"ecstatic.toml": toml, "index.html": "x"})
    with pytest.raises(DeployRejected, match=message) as info:
        plan_checkout(store, sha, LIMITS)
    assert len(info.value.message) < 200 and "\n" not in info.value.message


def test_unexpected_errors_in_checking_become_rejections(store, monkeypatch):
    import services.git.checkout as checkout

    sha = build_commit(store, {"index.html": "x"})

    def explode(*args):
        raise RecursionError("deep")

    monkeypatch.setattr(checkout, "_walk", explode)
    with pytest.raises(DeployRejected, match="could not be checked"):
        plan_checkout(store, sha, LIMITS)


class _Proto:
    def __init__(self):
        self.sideband = []

    def write_sideband(self, channel, data):
        self.sideband.append(data)


def test_an_update_hook_that_crashes_refuses_the_ref():
    class Crashing:
        def execute(self, ref, old, new):
            raise RuntimeError("boom")

    handler = EchoingReceivePackHandler.__new__(EchoingReceivePackHandler)
    handler.repo = type("Repo", (), {"hooks": {"update": Crashing()}})()
    handler.proto = _Proto()
    handler._client_capabilities = {b"side-band-64k"}

    error = handler._on_update(b"refs/heads/main", b"0" * 40, b"1" * 40)

    assert error.startswith(b"deploy rejected: the push could not be checked")
    assert b"the live site was not changed" in b"".join(handler.proto.sideband)


@pytest.mark.parametrize(
    "text",
    [
        f"GET /v1/sites?token={TOKEN}&x=1",
        f"GET /v1/sites?access_token={TOKEN}",
        f'127.0.0.1 - {TOKEN} [01/Jan/2026] "POST /git/x.git/git-receive-pack"',
        "Authorization: Basic eDplY3NfQTFiMkMzZDRBMWIyQzNkNA==",
        f"credential ecsd_{TOKEN[4:]}",
        f"http://x:{TOKEN}@127.0.0.1/git/a.git",
    ],
)
def test_redact_removes_tokens(text):
    assert TOKEN[4:12] not in redact(text) and "eDplY3Nf" not in redact(text)
    assert "[redacted]" in redact(text)


def test_filter_cleans_message_args_extras_and_tracebacks(caplog):
    caplog.handler.addFilter(RedactingFilter())
    log = logging.getLogger("test.redact")
    try:
        raise ValueError(f"bad token {TOKEN}")
    except ValueError:
        log.exception("failed %s", f"?token={TOKEN}", extra={"auth": {"user": TOKEN}})
    record = caplog.records[-1]
    assert TOKEN not in caplog.text
    assert TOKEN not in json.dumps(record.auth)
    assert TOKEN not in (record.exc_text or "")


def test_logging_dict_installs_the_filter_on_every_handler():
    stream = io.StringIO()
    config = logging_dict("INFO", "t")
    config["handlers"]["stderr"]["stream"] = stream
    logging.config.dictConfig(config)
    try:
        logging.getLogger("gunicorn.access").info("%(u)s did it", {"u": TOKEN})
        logging.getLogger("any.thing").warning("x", extra={"url": f"/a?token={TOKEN}"})
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    # gunicorn's access lines are dropped outright now (they carry IPs and Basic users);
    # every other line still goes through the filter.
    assert TOKEN not in stream.getvalue() and stream.getvalue().count("[redacted]") == 1
    assert "did it" not in stream.getvalue()
