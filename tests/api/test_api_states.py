"""The deploy state machine, alone and through the store, with random sequences."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core.errors import Conflict
from services.falcon_apps.api.states import FINAL, NEXT, STATES, check_transition
from services.falcon_apps.api.store import MetadataStore

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize("current", STATES)
@pytest.mark.parametrize("new", STATES)
def test_check_transition_table(current, new):
    legal = new in NEXT[current] or (new == current and current not in FINAL)
    if legal:
        check_transition(current, new)
    else:
        with pytest.raises(Conflict):
            check_transition(current, new)


def test_the_happy_path_and_the_exits():
    for current, new in [
        ("queued", "building"),
        ("building", "publishing"),
        ("publishing", "live"),
    ]:
        check_transition(current, new)
    for current in ("queued", "building", "publishing"):
        for end in ("failed", "superseded"):
            check_transition(current, end)
    for final in FINAL:
        assert NEXT[final] == frozenset()


actions = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sampled_from(["production", "main", "dev"])),
        st.tuples(st.just("patch"), st.integers(0, 7), st.sampled_from(STATES)),
        st.tuples(st.just("activate"), st.integers(0, 7)),
    ),
    max_size=25,
)


def pointers(path):
    with sqlite3.connect(path) as conn:
        production = conn.execute("SELECT live_deploy_id FROM sites").fetchall()
        previews = conn.execute("SELECT branch, live_deploy_id FROM previews").fetchall()
    return [p for (p,) in production if p], [(b, p) for b, p in previews if p]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=actions)
def test_random_sequences_never_leave_a_final_state_nor_make_two_live_pointers(steps):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "db.sqlite3"
        store = MetadataStore(path)
        user, _ = store.create_user("alice")
        site = store.create_site(user["id"], "blog", "blog.localhost")
        ids: list[str] = []
        final: dict[str, str] = {}
        for step in steps:
            if step[0] == "create":
                context = "production" if step[1] == "production" else "preview"
                branch = None if context == "production" else step[1]
                fields = {"context": context, "branch": branch, "commit_sha": SHA}
                fields.update(author=None, message=None)
                ids.append(store.deploys.create(user["id"], site["id"], fields, "localhost")["id"])
            elif ids:
                deploy_id = ids[step[1] % len(ids)]
                before = store.deploys.get(user["id"], site["id"], deploy_id)["state"]
                try:
                    if step[0] == "patch":
                        store.deploys.update(user["id"], site["id"], deploy_id, {"state": step[2]})
                    else:
                        store.deploys.activate(user["id"], site["id"], deploy_id)
                except Conflict:
                    pass
                else:
                    if step[0] == "patch":
                        assert step[2] in NEXT[before] or step[2] == before
                    else:
                        assert before == "live"
            deploys = {d["id"]: d for d in store.deploys.list(user["id"], site["id"])}
            for deploy_id, state in final.items():
                assert deploys[deploy_id]["state"] == state, "left a final state"
            final.update({i: d["state"] for i, d in deploys.items() if d["state"] in FINAL})
            production, previews = pointers(path)
            assert len(production) <= 1
            assert len({branch for branch, _ in previews}) == len(previews)
            for pointed in production + [p for _, p in previews]:
                assert deploys[pointed]["state"] == "live"
            current = [d for d in deploys.values() if d["current"]]
            assert len(current) == len(production) + len(previews)
            keys = [(d["context"], d["branch"]) for d in current]
            assert len(keys) == len(set(keys)), "two live pointers for one context"
        store.close()


def test_a_new_push_supersedes_unfinished_deploys_of_its_branch(store, alice):
    site = store.create_site(alice["id"], "blog", "blog.localhost")

    def create(context, branch=None):
        fields = {"context": context, "branch": branch, "commit_sha": SHA}
        fields.update(author=None, message=None)
        return store.deploys.create(alice["id"], site["id"], fields, "localhost")

    old = create("production")
    other_branch = create("preview", "dev")
    store.deploys.update(alice["id"], site["id"], old["id"], {"state": "building"})
    create("production")
    old = store.deploys.get(alice["id"], site["id"], old["id"])
    assert (old["state"], old["reason"]) == ("superseded", "superseded")
    assert old["finished_at"] is not None and old["duration_seconds"] >= 0
    with pytest.raises(Conflict):
        store.deploys.update(alice["id"], site["id"], old["id"], {"state": "live"})
    assert store.deploys.get(alice["id"], site["id"], other_branch["id"])["state"] == "queued"
