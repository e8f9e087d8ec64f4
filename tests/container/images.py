"""The Ecstatic, Caddy and Prometheus images, built once and rebuilt only when inputs change.

Other tests reuse them::

    from tests.container.images import ensure_images
    refs = ensure_images()   # {"ecstatic": "localhost/ecstatic:<hash>", "caddy": ..., ...}

Each image is tagged with a hash of its inputs (Dockerfile, pyproject.toml, services/**,
and the base image's id), so an unchanged tree costs one ``podman image exists`` per image;
a changed one rebuilds, reusing podman's layer cache: a change to services/ or the README
takes seconds, one to pyproject.toml reinstalls the dependencies (minutes).

``ensure_images`` also exports ``CONTAINERS_CONF`` (see infra/images/) to this process, so
plain ``podman`` calls made afterwards (``podman kube play`` too) work.

A first build takes minutes (the chDB wheel is about 534 MB): give the test that triggers it
a long ``pytest.mark.timeout``. A missing tool raises, so the calling test fails.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import io
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.container.podman import ROOT, podman, podman_env, require_tools

__all__ = [
    "BASE_IMAGE",
    "IMAGES",
    "Image",
    "build_seconds",
    "ensure_images",
    "ensure_one",
    "pip_settings_tar",
]

# Made by infra/images/prepare-podman.sh from a debootstrap'ed root: no registry here.
BASE_IMAGE = "localhost/debian-base:bookworm"
PREPARE = ROOT / "infra" / "images" / "prepare-podman.sh"
# One build at a time on this machine, also across test sessions of other checkouts.
LOCK = Path("/var/tmp/ecstatic-images.lock")
BUILD_TIMEOUT = 3600
# The host's pip settings and trust store, handed to the build as a secret (see Dockerfile).
PIP_FILES = (Path("/etc/pip.conf"), Path("/etc/xdg/pip"))
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_CA = "usr/local/share/ecstatic-build/ca-certificates.crt"


@dataclass(frozen=True)
class Image:
    """One image: where it is built from and which files decide its tag."""

    repository: str
    dockerfile: str  # relative to ROOT
    context: str  # relative to ROOT
    inputs: tuple[str, ...]  # files or directories relative to ROOT
    pip: bool = False  # its build runs pip: hand it the host's pip settings


IMAGES: dict[str, Image] = {
    "ecstatic": Image(
        "localhost/ecstatic",
        "Dockerfile",
        ".",
        ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "services"),
        pip=True,
    ),
    "caddy": Image(
        "localhost/ecstatic-caddy",
        "infra/images/caddy/Dockerfile",
        "infra/images/caddy",
        ("infra/images/caddy",),
    ),
    "prometheus": Image(
        "localhost/ecstatic-prometheus",
        "infra/images/prometheus/Dockerfile",
        "infra/images/prometheus",
        ("infra/images/prometheus",),
    ),
    # Kubernetes build Jobs' image: the site generators from Debian (about 40 s cold).
    "builder": Image(
        "localhost/ecstatic-builder",
        "infra/images/builder/Dockerfile",
        "infra/images/builder",
        ("infra/images/builder",),
    ),
}

# Seconds each build of this session took (0 when the image was already there).
build_seconds: dict[str, float] = {}


def _files(inputs: tuple[str, ...]):
    for name in inputs:
        path = ROOT / name
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in candidates:
            # Bytecode and caches change without the source changing.
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
                yield file


def input_hash(image: Image, base_id: str) -> str:
    """A short hash of everything the image is built from."""
    digest = hashlib.sha256(base_id.encode())
    for file in _files(image.inputs):
        digest.update(str(file.relative_to(ROOT)).encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:16]


def pip_settings_tar() -> bytes:
    """A tar of the host's pip settings and CA bundle, files only (never / or /etc entries)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for root in PIP_FILES:
            for file in sorted(root.rglob("*")) if root.is_dir() else [root]:
                if file.is_file():
                    tar.add(file, arcname=str(file).lstrip("/"), recursive=False)
        if HOST_CA.is_file():
            tar.add(HOST_CA, arcname=BUILD_CA, recursive=False)
    return buffer.getvalue()


def _base_id() -> str:
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        # Idempotent: checks the tools and podman's settings, imports the base when absent.
        result = subprocess.run(
            ["bash", str(PREPARE)], env=podman_env(), capture_output=True, text=True, timeout=900
        )
        if result.returncode != 0:
            raise RuntimeError(f"{PREPARE} failed:\n{result.stdout}\n{result.stderr}")
    return podman("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE).stdout.strip()


def _build(image: Image, ref: str) -> None:
    with tempfile.TemporaryDirectory(prefix="ecstatic-build-") as tmp:
        args = [
            "build",
            "--network", "host",  # apt and pip reach their registries through the host
            "--build-arg", f"BASE={BASE_IMAGE}",
            "--file", str(ROOT / image.dockerfile),
            "--tag", ref,
        ]
        if image.pip:
            secret = Path(tmp) / "pip-settings.tar"
            secret.write_bytes(pip_settings_tar())
            args += ["--secret", f"id=pip-settings,src={secret}"]
        started = time.monotonic()
        podman(*args, str(ROOT / image.context), timeout=BUILD_TIMEOUT)
        build_seconds[image.repository] = time.monotonic() - started


def ensure_image(name: str) -> str:
    """The reference of image ``name`` for the current inputs, built if absent."""
    image = IMAGES[name]
    ref = f"{image.repository}:{input_hash(image, _base_id())}"
    if podman("image", "exists", ref, check=False).returncode != 0:
        _build(image, ref)
    else:
        build_seconds.setdefault(image.repository, 0.0)
    return ref


def ensure_one(name: str) -> str:
    """Build (or find) one image, under the same lock as ``ensure_images``."""
    require_tools("podman", "runc", "debootstrap")
    podman_env()
    LOCK.touch(exist_ok=True)
    with LOCK.open() as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return ensure_image(name)


@functools.cache
def ensure_images() -> dict[str, str]:
    """Build (or find) every image once per process: ``{"ecstatic": ref, "caddy": ref, ...}``."""
    require_tools("podman", "runc", "debootstrap")
    podman_env()
    LOCK.touch(exist_ok=True)
    with LOCK.open() as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return {name: ensure_image(name) for name in IMAGES}
