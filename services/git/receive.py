"""dulwich's receive-pack, also showing refused ref updates as ``remote: error:`` lines.

When an ``update`` hook refuses a ref, dulwich reports it only in the ref status, which
git prints as ``! [remote rejected] main -> main (<reason>)``. Echoing the reason on the
progress channel puts it where pushers look first, beside the deploy's other output.
Registered through ``make_wsgi_chain(handlers=...)``, dulwich's extension point.
"""

from __future__ import annotations

import contextlib

from dulwich.errors import GitProtocolError
from dulwich.protocol import CAPABILITY_SIDE_BAND_64K, SIDE_BAND_CHANNEL_PROGRESS
from dulwich.server import ReceivePackHandler

__all__ = ["EchoingReceivePackHandler", "HANDLERS"]


class EchoingReceivePackHandler(ReceivePackHandler):
    """Receive-pack that echoes ``update`` hook refusals to the progress sideband."""

    def _on_update(self, ref_name, old_sha, new_sha):
        error = super()._on_update(ref_name, old_sha, new_sha)
        if error:
            text = (
                b"error: "
                + error
                + b"\nerror: the push was refused; the live site was not changed\n"
            )
            # has_capability raises if the client sent none; then there is no sideband.
            with contextlib.suppress(GitProtocolError):
                if self.has_capability(CAPABILITY_SIDE_BAND_64K):
                    self.proto.write_sideband(SIDE_BAND_CHANNEL_PROGRESS, text)
        return error


HANDLERS = {b"git-receive-pack": EchoingReceivePackHandler}
