"""Fakes and tree builders shared by the git room's tests (imported by name)."""

from __future__ import annotations

import threading

from dulwich.objects import Blob, Commit, Tree

from services.core.errors import NotFound, Unauthorized, Unavailable

SYMLINK = 0o120000
GITLINK = 0o160000
DIR = 0o040000
FILE = 0o100644
EXEC = 0o100755


class Link:
    """A symlink entry in a tree spec."""

    def __init__(self, target: str):
        self.target = target


class Submodule:
    """A gitlink entry in a tree spec."""

    def __init__(self, sha: bytes = b"1" * 40):
        self.sha = sha


class Raw:
    """An entry with an explicit mode and sha (e.g. a dangling one)."""

    def __init__(self, mode: int, sha: bytes):
        self.mode = mode
        self.sha = sha


def build_tree(store, spec: dict) -> bytes:
    """Store a tree described by ``{name: bytes | str | dict | Link | Submodule | Raw}``."""
    tree = Tree()
    for name, value in spec.items():
        raw_name = name if isinstance(name, bytes) else name.encode()
        if isinstance(value, dict):
            tree.add(raw_name, DIR, build_tree(store, value))
        elif isinstance(value, Link):
            blob = Blob.from_string(value.target.encode())
            store.add_object(blob)
            tree.add(raw_name, SYMLINK, blob.id)
        elif isinstance(value, Submodule):
            tree.add(raw_name, GITLINK, value.sha)
        elif isinstance(value, Raw):
            tree.add(raw_name, value.mode, value.sha)
        else:
            data = value if isinstance(value, bytes) else value.encode()
            blob = Blob.from_string(data)
            store.add_object(blob)
            tree.add(raw_name, FILE, blob.id)
    store.add_object(tree)
    return tree.id


def build_commit(
    store, spec: dict, parents: list[bytes] | None = None, message: bytes = b"c"
) -> bytes:
    """Store a commit of ``spec`` and return its sha."""
    commit = Commit()
    commit.tree = build_tree(store, spec)
    commit.parents = parents or []
    commit.author = commit.committer = b"Test <t@example.com>"
    commit.author_time = commit.commit_time = 1_700_000_000
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = message
    store.add_object(commit)
    return commit.id


class FakeAuthorizer:
    """Tokens map to the sites their user owns; ``down`` simulates an unreachable api."""

    def __init__(self):
        self.sites: dict[str, dict[str, dict]] = {}
        self.down = False
        self.calls: list[tuple[str | None, str]] = []
        self._lock = threading.Lock()

    def add(self, token: str, site: dict) -> dict:
        with self._lock:
            self.sites.setdefault(token, {})[site["id"]] = site
        return site

    def site(self, token, site_id):
        self.calls.append((token, site_id))
        if self.down:
            raise Unavailable("api unreachable")
        if not token or token not in self.sites:
            raise Unauthorized("invalid token")
        try:
            return self.sites[token][site_id]
        except KeyError:
            raise NotFound(f"site {site_id} not found") from None


def make_site(site_id: str, name: str) -> dict:
    return {
        "id": site_id,
        "name": name,
        "url": f"http://{name}.localhost:8080/",
        "git_url": f"http://localhost:8080/git/{site_id}.git",
        "hostnames": [f"{name}.localhost"],
        "created_at": "2024-05-01T12:00:00Z",
        "current_deploy": None,
    }
