"""The suite itself: pytest imports test modules by basename (folders without
``__init__.py``), so two test files with one name break collection of the whole run."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_name():
    packages = {p.parent for p in TESTS.rglob("__init__.py")}
    names = Counter(
        p.name for p in TESTS.rglob("*.py") if p.parent not in packages and p.name != "conftest.py"
    )
    assert [name for name, count in names.items() if count > 1] == []
