"""What the listener tests share: a collecting accept, a waiting helper, a running server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from services.core.intake_config import IntakeConfig
from services.intake.syslog import SyslogServer

HEADER = b"<165>1 2021-01-01T22:14:15.003Z edge bunnycdn - logs - "


def record(request_id: str, **extra) -> bytes:
    """A Bunny JSON body."""
    body = {"Host": "site.b-cdn.net", "Status": 200, "RequestId": request_id, **extra}
    return json.dumps(body).encode()


def line(request_id: str) -> bytes:
    """One LF-framed RFC 5424 frame carrying a Bunny JSON body."""
    return HEADER + record(request_id) + b"\n"


class Collect:
    """An ``accept`` that keeps every call; ``gate`` (when cleared) makes it wait."""

    def __init__(self):
        self.calls: list[list[bytes]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, bodies: list[bytes]) -> None:
        await self.gate.wait()
        self.calls.append(bodies)

    @property
    def bodies(self) -> list[bytes]:
        return [body for call in self.calls for body in call]

    def ids(self) -> list[str]:
        return [json.loads(body)["RequestId"] for body in self.bodies]


async def eventually(predicate, timeout=10.0, message="condition not reached"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.01)


def config(**overrides) -> IntakeConfig:
    return IntakeConfig(**{"syslog_host": "127.0.0.1", **overrides})


@contextlib.asynccontextmanager
async def serving(accept, metrics, port=None, **overrides):
    server = SyslogServer(accept, metrics, config(**overrides), port=port)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(time.monotonic() + 1.0)
