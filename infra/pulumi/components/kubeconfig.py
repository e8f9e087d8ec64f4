"""The kubeconfig of the box's k3s, fetched over SSH, and the tunnel the program uses it through.

The firewall keeps the Kubernetes API (6443) closed, so the program fetches
``/etc/rancher/k3s/k3s.yaml`` over SSH, forwards a local port to 127.0.0.1:6443 on the box
over that same connection, and points the kubeconfig at https://127.0.0.1:<tunnel port>
(k3s's serving certificate covers 127.0.0.1). The connection stays open for the life of the
program, which is as long as the Kubernetes provider needs it during ``pulumi up``.

``__main__`` depends on the :class:`KubeconfigSource` protocol only: :class:`SshKubeconfigSource`
is the real one, and tests hand in a fake so that nothing touches the network under mocks.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

import asyncssh
import pulumi
import yaml

logger = logging.getLogger(__name__)

KUBECONFIG_PATH = "/etc/rancher/k3s/k3s.yaml"
READY_COMMAND = "k3s kubectl get --raw /readyz"
WHAT_WE_WAIT_FOR = f"{KUBECONFIG_PATH} to exist and `{READY_COMMAND}` to print ok"


@dataclass(frozen=True)
class KubeconfigRequest:
    """Where the box is and how to trust it; plain values, resolved from the Box's outputs."""

    host: str
    client_private_key: str = field(repr=False)  # the deploy key (OpenSSH), never logged
    host_public_key: str  # the box's pinned SSH host key, "ssh-ed25519 AAAA..."
    tunnel_port: int  # local port the kubeconfig will point at
    ssh_port: int = 22
    username: str = "root"
    api_port: int = 6443  # where the Kubernetes API listens on the box
    timeout: float = 900.0  # first boot: volume, packages, k3s download and start
    retry_interval: float = 5.0


class KubeconfigSource(Protocol):
    """Anything that turns a request into a kubeconfig whose API server is reachable."""

    def __call__(self, request: KubeconfigRequest) -> Awaitable[str]:
        """Return the kubeconfig (YAML) for ``request``; its server must answer when it does."""
        ...


class KubeconfigTimeout(TimeoutError):
    """k3s did not become ready before the deadline."""


class HostKeyRejected(ConnectionError):
    """The box answered with a host key other than the pinned one: never retried."""


def rewrite_server(kubeconfig: str, server: str) -> str:
    """Point every cluster of ``kubeconfig`` at ``server`` (k3s writes https://127.0.0.1:6443)."""
    document = yaml.safe_load(kubeconfig)
    clusters = document.get("clusters") if isinstance(document, dict) else None
    if not clusters:
        raise ValueError(f"{KUBECONFIG_PATH} on the box holds no clusters")
    for entry in clusters:
        entry["cluster"]["server"] = server
    return yaml.safe_dump(document, sort_keys=False)


def kubeconfig_output(
    source: KubeconfigSource,
    *,
    host: pulumi.Input[str],
    client_private_key: pulumi.Input[str],
    host_public_key: pulumi.Input[str],
    ready: pulumi.Input[str],
    tunnel_port: int,
    timeout: float,
) -> pulumi.Output[str]:
    """The kubeconfig as a secret Output, fetched by ``source`` once ``ready`` resolves.

    Args:
        source: fetches the kubeconfig (and opens whatever tunnel its server needs).
        host: the box's public address.
        client_private_key: the deploy key, authorized for root on the box.
        host_public_key: the box's pinned SSH host key.
        ready: resolves once the box can answer (the volume attachment).
        tunnel_port: local port of the tunnel to the Kubernetes API.
        timeout: how long to wait for k3s, in seconds.
    """
    inputs = pulumi.Output.all(host, client_private_key, host_public_key, ready)
    request = inputs.apply(
        lambda v: KubeconfigRequest(
            host=v[0],
            client_private_key=v[1],
            host_public_key=v[2],
            tunnel_port=tunnel_port,
            timeout=timeout,
        )
    )
    return pulumi.Output.secret(request.apply(source))


class SshKubeconfigSource:
    """The real source: asyncssh with the pinned host key, plus the port forward to the API."""

    def __init__(self) -> None:
        """Start with no connection; each call opens one and keeps it (and its tunnel) open."""
        self._connections: list[asyncssh.SSHClientConnection] = []

    async def __call__(self, request: KubeconfigRequest) -> str:
        """Wait for k3s, open the tunnel, return the kubeconfig pointed at the tunnel."""
        connection, kubeconfig = await wait_for_kubeconfig(request)
        self._connections.append(connection)
        await _open_tunnel(connection, request)
        return rewrite_server(kubeconfig, f"https://127.0.0.1:{request.tunnel_port}")

    async def close(self) -> None:
        """Close every connection (and so every tunnel) this source opened."""
        for connection in self._connections:
            connection.close()
            await connection.wait_closed()
        self._connections.clear()


async def wait_for_kubeconfig(
    request: KubeconfigRequest,
) -> tuple[asyncssh.SSHClientConnection, str]:
    """Connect and retry until k3s is ready; return the open connection and the raw kubeconfig.

    Raises:
        HostKeyRejected: the box's host key is not the pinned one.
        KubeconfigTimeout: the deadline passed; the message says what it waited for and why
            the last attempt failed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.timeout
    client_key = asyncssh.import_private_key(request.client_private_key)
    pinned = asyncssh.import_public_key(request.host_public_key)
    last_failure = "no attempt finished"
    attempts = 0
    while True:
        attempts += 1
        remaining = max(deadline - loop.time(), 0.1)
        try:
            connection = await asyncio.wait_for(
                _connect(request, client_key, pinned), timeout=min(remaining, 30.0)
            )
        except asyncssh.HostKeyNotVerifiable as err:
            raise HostKeyRejected(
                f"{request.host}:{request.ssh_port} presented a host key other than the pinned "
                f"{pinned.get_fingerprint()}: refusing to connect ({err.reason})"
            ) from None
        except (TimeoutError, OSError, asyncssh.Error) as err:
            last_failure = f"ssh: {_describe(err)}"
        else:
            failure, kubeconfig = await _probe(connection)
            if failure is None:
                return connection, kubeconfig
            last_failure = failure
            connection.close()
        logger.info("k3s not ready yet attempt=%d last_failure=%r", attempts, last_failure)
        if loop.time() + request.retry_interval >= deadline:
            raise KubeconfigTimeout(
                f"k3s on {request.username}@{request.host}:{request.ssh_port} was not ready "
                f"after {request.timeout:g}s ({attempts} attempts): waited for "
                f"{WHAT_WE_WAIT_FOR}; last failure: {last_failure}"
            )
        await asyncio.sleep(request.retry_interval)


async def _connect(
    request: KubeconfigRequest, client_key: asyncssh.SSHKey, pinned: asyncssh.SSHKey
) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        request.host,
        request.ssh_port,
        username=request.username,
        client_keys=[client_key],
        # Only the pinned key is trusted: no known_hosts file, no CA, nothing learned.
        known_hosts=([pinned], [], []),
        server_host_key_algs=[pinned.get_algorithm()],
        config=None,  # the operator's ~/.ssh/config must not change who we trust
        agent_path=None,
        password=None,
        preferred_auth="publickey",
        keepalive_interval=30,
    )


async def _probe(connection: asyncssh.SSHClientConnection) -> tuple[str | None, str]:
    """One readiness check; returns (why it is not ready or None, the kubeconfig)."""
    try:
        kubeconfig = await connection.run(f"cat {KUBECONFIG_PATH}", check=False)
        if kubeconfig.exit_status != 0:
            return f"{KUBECONFIG_PATH}: {_output(kubeconfig) or 'cannot be read'}", ""
        ready = await connection.run(READY_COMMAND, check=False)
    except (OSError, asyncssh.Error) as err:
        return f"ssh: {_describe(err)}", ""
    answer = str(ready.stdout or "").strip()
    if ready.exit_status != 0 or answer != "ok":
        return f"`{READY_COMMAND}` answered {_output(ready) or 'nothing'!r}", ""
    return None, str(kubeconfig.stdout)


async def _open_tunnel(
    connection: asyncssh.SSHClientConnection, request: KubeconfigRequest
) -> None:
    try:
        await connection.forward_local_port(
            "127.0.0.1", request.tunnel_port, "127.0.0.1", request.api_port
        )
    except OSError as err:
        if err.errno != errno.EADDRINUSE:
            raise
        # Most likely the operator's own `ssh -L` to this box. Safe to use: the kubeconfig
        # pins the cluster's CA, so a listener that is not this cluster fails TLS.
        logger.warning(
            "tunnel port already in use, using the listener there port=%d", request.tunnel_port
        )


def _output(result: asyncssh.SSHCompletedProcess) -> str:
    text = f"{result.stderr or ''}{result.stdout or ''}".strip()
    return text[-300:]


def _describe(err: BaseException) -> str:
    if isinstance(err, asyncio.TimeoutError):
        return "no answer in time"
    reason = getattr(err, "reason", None)
    return f"{type(err).__name__}: {reason or err}"
