"""dulwich's receive-pack with bounded pack intake and loud, safe refusals.

Three changes to ``ReceivePackHandler``, registered through
``make_wsgi_chain(handlers=...)``, dulwich's extension point:

* the pack is received by ``add_guarded_pack`` (sizes checked before inflating, bounded
  memory) instead of dulwich's ``add_thin_pack``; a limit it hits is told to the pusher
  on the progress sideband (``remote: error: ...``) as well as in the unpack status;
* an ``update`` hook refusal is echoed on the progress sideband too: dulwich reports it
  only in the ref status, which git prints as ``! [remote rejected] main -> main (...)``;
* an exception escaping the ``update`` hook refuses the ref (dulwich would let it
  propagate, and a hook that swallowed it would let the ref move);
* no ref moves before the request's body is whole: dulwich reads it while it arrives
  (``body.await_whole_body``);
* pushes to one repository are serialized, and a ref update that still loses a race
  fails loudly (dulwich reports it as ``ok`` and runs post-receive for it);
* holding that lock, a ref lock file left by a killed receiver is stale (every ref
  writer holds it) and is removed, where dulwich would refuse every later push;
* any other failure mid-push still reaches the pusher as a ``remote: error:`` line,
  not only as a hung-up connection.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path

from dulwich.errors import GitProtocolError
from dulwich.protocol import CAPABILITY_SIDE_BAND_64K, SIDE_BAND_CHANNEL_PROGRESS
from dulwich.server import ReceivePackHandler

from .body import await_whole_body
from .limits import IntakeLimits, IntakeRefused
from .locks import SiteLocks
from .middleware import CLIENT_ERRORS
from .packs import add_guarded_pack

__all__ = ["EchoingReceivePackHandler", "HANDLERS", "make_handlers"]

log = logging.getLogger(__name__)

_CHECK_FAILED = b"deploy rejected: the push could not be checked (internal error)"
_INTERNAL = "error: the server failed while receiving this push (it is logged); push again\n"


def clear_stale_ref_locks(controldir: Path) -> list[Path]:
    """Remove ``refs/**/*.lock`` and ``packed-refs.lock``; only call holding the push lock.

    dulwich takes these with ``O_EXCL`` and removes them when done, so one that exists
    while no receiver runs was left by a killed process. Returns what was removed.
    """
    found = [*Path(controldir, "refs").rglob("*.lock"), Path(controldir, "packed-refs.lock")]
    removed = []
    for path in found:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    for path in removed:
        log.warning("removed a stale ref lock", extra={"file": path.name})
    return removed


class EchoingReceivePackHandler(ReceivePackHandler):
    """Receive-pack with guarded intake that echoes refusals to the progress sideband."""

    limits = IntakeLimits()
    lock_timeout = 300.0

    def __init__(self, backend, args, proto, stateless_rpc=False, advertise_refs=False):
        """See ``ReceivePackHandler``; also routes pack intake through our guard."""
        super().__init__(backend, args, proto, stateless_rpc, advertise_refs)
        store = self.repo.object_store
        # dulwich's _apply_pack calls store.add_thin_pack(read, recv, max_input_size=...).
        # The store is this request's own instance, so shadowing the method here swaps
        # the intake without copying dulwich's 150-line ref-update logic.
        store.add_thin_pack = functools.partial(self._add_pack, store)
        # dulwich ignores set_if_equals' answer, so a push that lost a race for the ref
        # was told "ok" and deployed. A refused compare-and-swap becomes an error here
        # ("failed to write"), which also keeps the ref out of post-receive.
        refs = self.repo.refs
        refs.set_if_equals = functools.partial(self._set_if_equals, refs.set_if_equals)

    def handle(self) -> None:
        """Serve the request; pushes to one repository run one at a time.

        Two pushes racing for one ref would otherwise both be told "ok" (or one would
        crash on the ref's lock file); in turn, each sees the ref as the other left it.
        """
        if self.advertise_refs or not self.stateless_rpc:
            super().handle()
            return
        controldir = Path(self.repo.controldir())
        with SiteLocks(controldir, timeout=self.lock_timeout).hold("push"):
            clear_stale_ref_locks(controldir)
            try:
                super().handle()
            except Exception:
                if not self._told:
                    self._progress(_INTERNAL)
                raise

    def _apply_pack(self, refs):
        # dulwich catches only I/O and pack errors here; anything else would end the
        # response mid-protocol, which git reports as a hang-up (or, through a proxy
        # that ends it cleanly, waits on forever). Finish the report instead: every ref
        # not yet answered fails, so none of them is deployed, and the pusher is told.
        answered = set()
        try:
            for name, status in super()._apply_pack(refs):
                answered.add(name)
                yield name, status
        except Exception as exc:
            if self._told or isinstance(exc, CLIENT_ERRORS):
                raise  # already explained, or nobody is listening
            log.exception("push failed on the server")
            self._progress(_INTERNAL)
            if b"unpack" not in answered:
                yield b"unpack", b"internal error"
            for _old, _new, ref in refs:
                if ref not in answered:
                    yield ref, b"internal error"

    def _add_pack(self, store, read_all, read_some, progress=None, *, max_input_size=None):
        try:
            return add_guarded_pack(store, read_all, read_some, self.limits)
        except IntakeRefused as exc:
            log.info("push refused at intake", extra={"reason": exc.message})
            self._progress(f"error: {exc.message}\nerror: the live site was not changed\n")
            raise

    def _set_if_equals(self, original, name, old, new, *args, **kwargs):
        if original(name, old, new, *args, **kwargs):
            return True
        branch = name.removeprefix(b"refs/heads/").decode("utf-8", "replace")
        self._progress(
            f"error: {branch} moved while this push was received (another push came first)\n"
            "error: the live site shows the other push; fetch, merge, and push again\n"
        )
        raise OSError(f"{branch} moved during the push")

    def _on_update(self, ref_name, old_sha, new_sha):
        try:
            error = super()._on_update(ref_name, old_sha, new_sha)
        except Exception:  # noqa: BLE001 - refuse: an unchecked ref must never move
            log.exception("update hook failed")
            error = _CHECK_FAILED
        # The pack is in and checked; the body may still be arriving (a slow tail that
        # is then cut): no ref moves before it is whole. Raises BodyAbandoned if never.
        await_whole_body()
        if error:
            self._progress(
                "error: "
                + error.decode("utf-8", "replace")
                + "\nerror: the push was refused; the live site was not changed\n"
            )
        return error

    _told = False  # an error line already reached the pusher

    def _progress(self, text: str) -> None:
        self._told = self._told or text.startswith("error:")
        # has_capability raises if the client sent none; then there is no sideband.
        with contextlib.suppress(GitProtocolError):
            if self.has_capability(CAPABILITY_SIDE_BAND_64K):
                self.proto.write_sideband(SIDE_BAND_CHANNEL_PROGRESS, text.encode("utf-8"))


def make_handlers(
    limits: IntakeLimits, base: type[EchoingReceivePackHandler] = EchoingReceivePackHandler
) -> dict[bytes, type[ReceivePackHandler]]:
    """dulwich ``handlers=`` whose receive-pack (``base`` or a subclass) enforces ``limits``."""
    handler = type("LimitedReceivePackHandler", (base,), {"limits": limits})
    return {b"git-receive-pack": handler}


HANDLERS = make_handlers(IntakeLimits())
