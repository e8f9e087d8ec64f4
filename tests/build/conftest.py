"""Fixtures for the build room: a searchable work root and a one-call sandbox runner."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from build_kit import BASE_UID, Runner

from services.build.bwrap import Sandbox


@pytest.fixture
def work_root():
    # pytest's tmp_path sits under a 0700 directory the build uid cannot search.
    root = Path(tempfile.mkdtemp(prefix="ecstatic-build-test-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def runner(work_root):
    return Runner(work_root, Sandbox(base_uid=BASE_UID))
