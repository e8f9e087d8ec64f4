"""The Kubernetes Job that runs one build, as a plain camelCase manifest (no client needed).

The Job's pod runs two containers in sequence, so the site owner's command never sees a
writable path outside the pod's own scratch space:

* ``build`` (an init container, the builder image's unprivileged user ``BUILD_UID``)
  copies the checkout from ``/source`` (the exchange claim, read-only, ``<job>/src``) into
  ``/build`` (an emptyDir) and runs ``sh -c COMMAND`` there under ``prlimit`` (processes,
  file size, open files, no core dumps). Memory is the container's cgroup limit (an
  OOM kill), disk is its ``ephemeral-storage`` limit (the kubelet evicts the pod);
  ``/tmp`` and ``$HOME`` are emptyDirs counted in the same limit.
* ``collect`` (the container, as git's own uid so git can read and delete what it
  writes) copies the publish directory, if it is a directory inside ``/build``, to
  ``/out/site`` (the exchange claim, ``<job>/out``). It runs a fixed script, no user code.

The pod has no service-account token, no service links and only the environment
``build_environment`` makes; ``BUILD_LABELS`` select it for the deny-all NetworkPolicy
(``infra/pulumi/components/k8s_builds.py``). Pids: Kubernetes has no per-pod field for
them (only the kubelet's node-wide ``podPidsLimit``, which k3s leaves unlimited), so
RLIMIT_NPROC bounds the processes of ``BUILD_UID`` on the node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.build.limits import BuildLimits

__all__ = [
    "BUILD_CONTAINER",
    "BUILD_LABELS",
    "BUILD_UID",
    "COLLECT_CONTAINER",
    "OUT_DIR",
    "SITE_DIR",
    "SOURCE_DIR",
    "JobSettings",
    "build_environment",
    "job_manifest",
    "pod_spec",
]

Json = dict[str, Any]

BUILD_UID = 10100  # the builder image's "build" user (infra/images/builder/Dockerfile)
BUILD_LABELS = {"app.kubernetes.io/name": "build", "app.kubernetes.io/part-of": "ecstatic"}
BUILD_CONTAINER = "build"
COLLECT_CONTAINER = "collect"
SOURCE_DIR = "src"  # <exchange>/<job>/src: the checkout git copies in
OUT_DIR = "out"  # <exchange>/<job>/out: what ``collect`` copies out
SITE_DIR = "site"  # <exchange>/<job>/out/site: the publish directory
_PATH = "/usr/local/bin:/usr/bin:/bin"
_HOME = "/build-home"
_TMP_BYTES = 256 * 2**20
# Copy the checkout in, then run the command; "$1" keeps it out of the script's text.
_BUILD_SCRIPT = 'cp -R /source/. /build/ && exec /bin/sh -c "$1"'
# realpath -e resolves links inside this container: a publish path that leaves /build
# (a link to /etc) or is not a directory is not collected, and git reports it missing.
_COLLECT_SCRIPT = (
    'real=$(realpath -e -- "/build/$1") || exit 0; '
    'case "$real" in /build|/build/*) ;; *) echo "publish directory leaves the build"; exit 0;; '
    'esac; [ -d "$real" ] || exit 0; mkdir /out/site && cp -R -- "$real/." /out/site/'
)


@dataclass(frozen=True)
class JobSettings:
    """Cluster-side settings of build Jobs (``ECSTATIC_BUILDER_*``, see deploy_config).

    Attributes:
        namespace: Where the Jobs run (holds nothing but them and the exchange claim).
        image: The builder image.
        service_account: A ServiceAccount with no permissions (its token is not mounted).
        claim: The exchange claim in ``namespace``; git mounts the same directory.
        collect_uid: git's uid: the files ``collect`` writes must be git's to remove.
    """

    namespace: str
    image: str
    service_account: str
    claim: str
    collect_uid: int


def build_environment(user: Mapping[str, str]) -> list[Json]:
    """The build's complete environment: a fixed minimum, then the user's variables.

    The user's names were validated by ``config.check_environment`` (no PATH, HOME,
    LD_*, ECSTATIC_*), so they cannot displace the minimum.
    """
    env = {
        "PATH": _PATH,
        "HOME": _HOME,
        "USER": "build",
        "LOGNAME": "build",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "CI": "true",
        **user,
    }
    return [{"name": name, "value": value} for name, value in env.items()]


def _hardened(uid: int) -> Json:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _scratch_bytes(limits: BuildLimits) -> int:
    """The build container's disk: the work directory plus /tmp and $HOME."""
    return limits.max_workspace_bytes + 2 * _TMP_BYTES


def pod_spec(
    job: str,
    command: str,
    publish: str,
    environment: Mapping[str, str],
    limits: BuildLimits,
    settings: JobSettings,
) -> Json:
    """The build pod for Job ``job`` (its exchange directory is ``<claim>/<job>``)."""
    rlimits = [
        f"--nproc={limits.max_processes}",
        f"--fsize={limits.max_file_bytes}",
        f"--nofile={limits.max_open_files}",
        "--core=0",
    ]
    build = {
        "name": BUILD_CONTAINER,
        "image": settings.image,
        "command": ["prlimit", *rlimits, "--", "/bin/sh", "-c", _BUILD_SCRIPT, "build", command],
        "workingDir": "/build",
        "env": build_environment(environment),
        "resources": {
            "requests": {
                "cpu": "100m",
                "memory": str(min(256 * 2**20, limits.memory_bytes)),
                "ephemeral-storage": str(min(64 * 2**20, _scratch_bytes(limits))),
            },
            "limits": {
                "cpu": "1",
                "memory": str(limits.memory_bytes),
                "ephemeral-storage": str(_scratch_bytes(limits)),
            },
        },
        "securityContext": _hardened(BUILD_UID),
        "volumeMounts": [
            {
                "name": "exchange",
                "mountPath": "/source",
                "subPath": f"{job}/{SOURCE_DIR}",
                "readOnly": True,
            },
            {"name": "work", "mountPath": "/build"},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "home", "mountPath": _HOME},
        ],
    }
    collect = {
        "name": COLLECT_CONTAINER,
        "image": settings.image,
        "command": ["/bin/sh", "-c", _COLLECT_SCRIPT, "collect", publish],
        "env": [{"name": "PATH", "value": _PATH}],
        "resources": {
            "requests": {"cpu": "50m", "memory": "32Mi", "ephemeral-storage": "1Mi"},
            "limits": {"cpu": "1", "memory": "128Mi", "ephemeral-storage": "16Mi"},
        },
        "securityContext": _hardened(settings.collect_uid),
        "volumeMounts": [
            {"name": "work", "mountPath": "/build", "readOnly": True},
            {"name": "exchange", "mountPath": "/out", "subPath": f"{job}/{OUT_DIR}"},
        ],
    }
    return {
        "serviceAccountName": settings.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 5,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [build],
        "containers": [collect],
        "volumes": [
            {"name": "exchange", "persistentVolumeClaim": {"claimName": settings.claim}},
            {"name": "work", "emptyDir": {"sizeLimit": str(limits.max_workspace_bytes)}},
            {"name": "tmp", "emptyDir": {"sizeLimit": str(_TMP_BYTES)}},
            {"name": "home", "emptyDir": {"sizeLimit": str(_TMP_BYTES)}},
        ],
    }


def job_manifest(
    job: str,
    command: str,
    publish: str,
    environment: Mapping[str, str],
    limits: BuildLimits,
    settings: JobSettings,
) -> Json:
    """The Job the backend submits: one try, the build's wall clock as its deadline."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job, "namespace": settings.namespace, "labels": dict(BUILD_LABELS)},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": max(1, int(limits.timeout_seconds)),
            # A backstop when git dies before deleting it: Kubernetes removes it later.
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": dict(BUILD_LABELS)},
                "spec": pod_spec(job, command, publish, environment, limits, settings),
            },
        },
    }
