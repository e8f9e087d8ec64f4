import pytest

from services import targets


@pytest.mark.parametrize(
    ("spec", "rooms"),
    [
        ("api", ["api"]),
        ("intake,query", ["intake", "query"]),
        ("query, intake", ["query", "intake"]),
        ("http", ["api", "git", "query"]),
        ("all", ["api", "git", "query", "intake"]),
        ("api,all", ["api", "git", "query", "intake"]),
        (["git", "git"], ["git"]),
    ],
)
def test_resolve(spec, rooms):
    assert targets.resolve(spec) == rooms


@pytest.mark.parametrize("spec", ["", "nope", "api,nope", ","])
def test_resolve_rejects_unknown(spec):
    with pytest.raises(targets.TargetError):
        targets.resolve(spec)


def test_cycle_is_refused(monkeypatch):
    monkeypatch.setitem(targets.MODULES, "a", targets.Module(deps=("b",)))
    monkeypatch.setitem(targets.MODULES, "b", targets.Module(deps=("a",)))
    with pytest.raises(targets.TargetError, match="cycle"):
        targets.resolve("a")


def test_every_room_has_an_importable_builder():
    import importlib

    for name, module in targets.MODULES.items():
        if module.builder:
            module_name, _, function = module.builder.partition(":")
            assert callable(getattr(importlib.import_module(module_name), function)), name


def test_rooms_do_not_import_each_other():
    import ast
    from pathlib import Path

    root = Path(targets.__file__).parent
    rooms = {
        "falcon_apps/api": "services.falcon_apps.api",
        "falcon_apps/query": "services.falcon_apps.query",
        "git": "services.git",
        "intake": "services.intake",
    }
    for folder, package in rooms.items():
        others = [p for p in rooms.values() if p != package]
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    assert not any(name.startswith(o) for o in others), f"{path} imports {name}"
