"""receive-pack that streams the post-receive hook's output while it runs.

dulwich writes a post-receive hook's output to the progress sideband only when the hook
returns; a deploy's build can take minutes. Hooks with a ``stream(client_refs, write)``
method get a ``write`` that sends each line at once, so the pusher sees ``remote:``
lines as the build prints them (Caddy flushes git responses immediately: the map's
``stream`` flag on the git route).
"""

from __future__ import annotations

import contextlib

from dulwich.errors import GitProtocolError
from dulwich.protocol import CAPABILITY_SIDE_BAND_64K, SIDE_BAND_CHANNEL_PROGRESS

from .receive import EchoingReceivePackHandler

__all__ = ["StreamingReceivePackHandler"]


class StreamingReceivePackHandler(EchoingReceivePackHandler):
    """Echoes refusals (``EchoingReceivePackHandler``) and streams deploy output."""

    def _on_post_receive(self, client_refs) -> None:
        hook = self.repo.hooks.get("post-receive", None)
        stream = getattr(hook, "stream", None)
        if stream is None:
            super()._on_post_receive(client_refs)
            return
        sideband = False
        with contextlib.suppress(GitProtocolError):  # raised when the client sent no caps
            sideband = self.has_capability(CAPABILITY_SIDE_BAND_64K)

        def write(line: str) -> None:
            if sideband:
                data = (line + "\n").encode("utf-8", "replace")
                self.proto.write_sideband(SIDE_BAND_CHANNEL_PROGRESS, data)

        stream(client_refs, write)
