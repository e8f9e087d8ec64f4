"""Fixtures of the container tests: the images, built once per session (see images.py)."""

from __future__ import annotations

import pytest

from tests.container.images import ensure_images


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """``{"ecstatic": ref, "caddy": ref, "prometheus": ref}``, built when their inputs changed."""
    return ensure_images()
