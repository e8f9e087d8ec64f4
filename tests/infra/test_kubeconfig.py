"""The real asyncssh fetcher against a real asyncssh server on 127.0.0.1 playing the box."""

from __future__ import annotations

import asyncio
import re
import socket
import time

import asyncssh
import pytest
import yaml
from components.kubeconfig import (
    KUBECONFIG_PATH,
    READY_COMMAND,
    HostKeyRejected,
    KubeconfigRequest,
    KubeconfigTimeout,
    SshKubeconfigSource,
    rewrite_server,
    wait_for_kubeconfig,
)

K3S_KUBECONFIG = yaml.safe_dump({
    "apiVersion": "v1", "kind": "Config", "current-context": "default",
    "clusters": [{"name": "default", "cluster": {
        "certificate-authority-data": "Q0E=", "server": "https://127.0.0.1:6443"}}],
    "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
    "users": [{"name": "default", "user": {"client-certificate-data": "Y2VydA=="}}],
})


class FakeBox:
    """Answers the two commands the fetcher runs, like a k3s box during its first boot."""

    def __init__(self, file_after: int = 0, ready_after: int = 0, readyz_answer: str = "ok"):
        self.file_after, self.ready_after = file_after, ready_after
        self.readyz_answer = readyz_answer
        self.reads = self.probes = 0
        self.commands: list[str] = []

    def handle(self, process: asyncssh.SSHServerProcess) -> None:
        self.commands.append(process.command)
        if process.command == f"cat {KUBECONFIG_PATH}":
            self.reads += 1
            if self.reads <= self.file_after:
                process.stderr.write(f"cat: {KUBECONFIG_PATH}: No such file or directory\n")
                process.exit(1)
            else:
                process.stdout.write(K3S_KUBECONFIG)
                process.exit(0)
        elif process.command == READY_COMMAND:
            self.probes += 1
            if self.probes <= self.ready_after:
                process.stderr.write("The connection to the server 127.0.0.1:6443 was refused\n")
                process.exit(1)
            else:
                process.stdout.write(self.readyz_answer)
                process.exit(0 if self.readyz_answer == "ok" else 1)
        else:
            process.exit(127)


class Keys:
    def __init__(self) -> None:
        self.host = asyncssh.generate_private_key("ssh-ed25519")
        self.client = asyncssh.generate_private_key("ssh-ed25519")

    def request(self, port: int, **overrides) -> KubeconfigRequest:
        args = dict(
            host="127.0.0.1", ssh_port=port,
            client_private_key=self.client.export_private_key("openssh").decode(),
            host_public_key=self.host.export_public_key("openssh").decode().strip(),
            tunnel_port=free_port(), timeout=20.0, retry_interval=0.05,
        )
        args.update(overrides)
        return KubeconfigRequest(**args)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BoxSshServer(asyncssh.SSHServer):
    allowed_forward: int | None = None

    def connection_requested(self, dest_host, dest_port, orig_host, orig_port):
        # Like sshd on the box: the program may forward to the API on loopback only.
        return dest_host == "127.0.0.1" and dest_port == self.allowed_forward


async def start_box(keys: Keys, box: FakeBox, host_key=None, forward_to: int | None = None):
    class Server(BoxSshServer):
        allowed_forward = forward_to

    server = await asyncssh.create_server(
        Server, "127.0.0.1", 0,
        server_host_keys=[host_key or keys.host],
        authorized_client_keys=asyncssh.import_authorized_keys(
            keys.client.export_public_key().decode()
        ),
        process_factory=box.handle,
    )
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
def keys() -> Keys:
    return Keys()


def test_pinned_host_key_is_accepted_and_the_kubeconfig_returned(keys):
    box = FakeBox()

    async def scenario():
        server, port = await start_box(keys, box)
        connection, kubeconfig = await wait_for_kubeconfig(keys.request(port))
        connection.close()
        server.close()
        return kubeconfig

    assert asyncio.run(scenario()) == K3S_KUBECONFIG
    assert box.commands == [f"cat {KUBECONFIG_PATH}", READY_COMMAND]


def test_a_different_host_key_is_refused_at_once(keys):
    impostor = asyncssh.generate_private_key("ssh-ed25519")
    box = FakeBox()

    async def scenario():
        server, port = await start_box(keys, box, host_key=impostor)
        try:
            await wait_for_kubeconfig(keys.request(port, timeout=30.0))
        finally:
            server.close()

    started = time.monotonic()
    with pytest.raises(HostKeyRejected, match=re.escape(keys.host.get_fingerprint())):
        asyncio.run(scenario())
    assert time.monotonic() - started < 10  # not retried until the deadline
    assert box.commands == []  # nothing ran on the impostor


def test_retries_until_the_file_appears_and_k3s_is_ready(keys):
    box = FakeBox(file_after=3, ready_after=2)

    async def scenario():
        server, port = await start_box(keys, box)
        connection, kubeconfig = await wait_for_kubeconfig(keys.request(port))
        connection.close()
        server.close()
        return kubeconfig

    assert asyncio.run(scenario()) == K3S_KUBECONFIG
    assert (box.reads, box.probes) == (6, 3)


@pytest.mark.parametrize(
    ("box", "last_failure"),
    [
        (FakeBox(file_after=10**6), "No such file or directory"),
        (FakeBox(readyz_answer="[-]etcd failed"), "[-]etcd failed"),
    ],
    ids=["file-never-appears", "readyz-never-ok"],
)
def test_deadline_error_names_what_it_waited_for_and_the_last_failure(keys, box, last_failure):
    async def scenario():
        server, port = await start_box(keys, box)
        try:
            # Long enough for several full SSH round trips on a loaded machine.
            await wait_for_kubeconfig(keys.request(port, timeout=5.0, retry_interval=0.1))
        finally:
            server.close()

    with pytest.raises(KubeconfigTimeout) as raised:
        asyncio.run(scenario())
    message = str(raised.value)
    assert "was not ready after 5s" in message
    assert f"waited for {KUBECONFIG_PATH} to exist and `{READY_COMMAND}` to print ok" in message
    assert "last failure: " in message and last_failure in message


def test_a_box_that_does_not_answer_yet_is_retried_until_the_deadline(keys):
    port = free_port()  # nothing listens there
    with pytest.raises(KubeconfigTimeout, match=r"last failure: ssh: .*(refused|Errno)"):
        asyncio.run(wait_for_kubeconfig(keys.request(port, timeout=0.5, retry_interval=0.1)))


def test_source_opens_a_tunnel_to_the_api_and_points_the_kubeconfig_at_it(keys):
    box = FakeBox()

    async def scenario():
        async def api(reader, writer):  # stands in for k3s's API on the box's loopback
            writer.write(b"api:" + await reader.readexactly(4))
            await writer.drain()
            writer.close()

        api_server = await asyncio.start_server(api, "127.0.0.1", 0)
        api_port = api_server.sockets[0].getsockname()[1]
        server, port = await start_box(keys, box, forward_to=api_port)
        request = keys.request(port, api_port=api_port)
        source = SshKubeconfigSource()
        kubeconfig = await source(request)
        reader, writer = await asyncio.open_connection("127.0.0.1", request.tunnel_port)
        writer.write(b"ping")
        answer = await reader.read(100)
        writer.close()
        await source.close()
        server.close()
        api_server.close()
        return request, kubeconfig, answer

    request, kubeconfig, answer = asyncio.run(scenario())
    assert answer == b"api:ping"
    document = yaml.safe_load(kubeconfig)
    assert document["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{request.tunnel_port}"
    assert document["clusters"][0]["cluster"]["certificate-authority-data"] == "Q0E="


def test_an_operator_tunnel_already_on_the_port_is_used_instead(keys):
    box = FakeBox()

    async def scenario():
        server, port = await start_box(keys, box)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            request = keys.request(port, tunnel_port=taken.getsockname()[1])
            source = SshKubeconfigSource()
            kubeconfig = await source(request)
            await source.close()
        server.close()
        return request, kubeconfig

    request, kubeconfig = asyncio.run(scenario())
    assert f"https://127.0.0.1:{request.tunnel_port}" in kubeconfig


def test_rewrite_refuses_a_kubeconfig_without_clusters():
    with pytest.raises(ValueError, match="no clusters"):
        rewrite_server("apiVersion: v1\nkind: Config\n", "https://127.0.0.1:1")


def test_request_never_shows_the_private_key(keys):
    request = keys.request(22)
    assert "PRIVATE KEY" not in repr(request)
