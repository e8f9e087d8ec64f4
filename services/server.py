"""Run the rooms of one process under gunicorn.

One worker with threads: the worker owns the chDB engine (one engine per process) and
runs background rooms such as the intake beside the WSGI apps. Rooms are built in the
worker after the fork, never in the master, because chDB and threads do not survive fork.
Scale out with more processes (replicas), not more workers.
"""

from __future__ import annotations

import logging

from gunicorn.app.base import BaseApplication

from services import targets
from services.core.config import Config
from services.core.logs import logging_dict, setup_logging
from services.core.private_files import owner_only
from services.core.runtime import Context, Mount
from services.wsgi import ProcessApp

__all__ = ["ProcessServer", "serve"]

log = logging.getLogger(__name__)

# Which configured port each room listens on. A process binds the ports of all its rooms.
ROOM_PORTS = {"api": "api", "git": "git", "query": "query", "intake": "intake"}


def build_process_app(rooms: list[str], ctx: Context) -> ProcessApp:
    """Build every room of this process and start the background ones."""
    mounts, backgrounds = [], []
    for name in rooms:
        built = targets.build(name, ctx)
        # A room is a Mount, a Background, or several (git: its mount and deploy workers).
        for part in built if isinstance(built, (list, tuple)) else [built]:
            (mounts if isinstance(part, Mount) else backgrounds).append(part)
    app = ProcessApp(mounts, backgrounds, ctx.registry)
    for background in backgrounds:
        background.start()
    return app


class ProcessServer(BaseApplication):
    """A gunicorn application configured in code rather than from the command line."""

    def __init__(self, rooms: list[str], config: Config):
        self.rooms = rooms
        self.config = config
        self.process_app: ProcessApp | None = None
        super().__init__()

    def load_config(self) -> None:
        """Set gunicorn's options from our config."""
        binds = [f"{self.config.bind_host}:{self.config.port(ROOM_PORTS[r])}" for r in self.rooms]
        options = {
            "bind": binds,
            "workers": 1,
            "worker_class": "gthread",
            "threads": self.config.threads,
            # Pushes deploy inside the request; the gthread worker keeps heartbeating.
            "timeout": 300,
            "graceful_timeout": 30,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": self.config.log_level.lower(),
            "logconfig_dict": logging_dict(self.config.log_level, "+".join(self.rooms)),
            "proc_name": "ecstatic-" + "+".join(self.rooms),
            # One shared default socket path would collide between our processes;
            # supervisord (or Kubernetes) is the control interface.
            "control_socket_disable": True,
            # A process with the intake hands its ports over: the next one binds them
            # while this one drains (SO_REUSEPORT; the syslog listener does the same).
            "reuse_port": "intake" in self.rooms,
            "post_worker_init": self._post_worker_init,
            "worker_exit": self._worker_exit,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        """Called in the worker: build the rooms there."""
        setup_logging(self.config.log_level, service="+".join(self.rooms))
        ctx = Context(self.config)
        self.process_app = build_process_app(self.rooms, ctx)
        return self.process_app

    def _post_worker_init(self, worker) -> None:
        log.info("serving", extra={"rooms": self.rooms, "pid": worker.pid})

    def _worker_exit(self, server, worker) -> None:
        # SIGTERM: gunicorn has finished in-flight requests; now drain background rooms
        # (the intake flushes its buffer and saves its offsets) before the process ends.
        if self.process_app is None:
            return
        for background in self.process_app.backgrounds:
            try:
                background.stop(timeout=25)
            except Exception:  # noqa: BLE001 - keep stopping the others
                log.exception("stop failed", extra={"room": background.name})
        log.info("stopped", extra={"rooms": self.rooms})


def serve(target_spec: str, config: Config) -> None:
    """Run the rooms named by ``target_spec`` (e.g. ``intake,query``) until SIGTERM."""
    owner_only()  # also when started without the ecstatic command (a container's entry)
    rooms = targets.resolve(target_spec)
    setup_logging(config.log_level, service="+".join(rooms))
    ProcessServer(rooms, config).run()
