"""Cancellation inside one worker: which requests are cancelled, and the work that can stop.

:class:`Cancellations` is told about every pending cancel (streams/control.py reads the control
topic). It remembers each cancelled request for ``cancel.window_s`` (bounded in number), so a
stage event of that request that starts later, on this worker, ends the request at once
(:meth:`Cancellations.check` at every stage boundary: no Redis round trip). Work running now
stops through :meth:`Cancellations.abortable`: the scope cancels its task the way
``asyncio.timeout`` does (the same cancel/uncancel bookkeeping), and raises
:class:`RequestCancelled`, a control signal the stage turns into the ``CANCELLED`` response.

What runs inside an abortable scope is what may be cut short: the model call, the wait for a
busy session, a read-only tool call. A side-effecting tool call is never cut: it finishes and is
journaled; the tool calls of a batch that have not started are skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from types import TracebackType

from agentstream.exceptions import ControlSignal

#: At most this many cancelled requests are remembered per worker (the oldest are forgotten).
MAX_REMEMBERED = 100_000
#: A cancel reason is kept to this many characters (it goes into the response's metadata).
MAX_REASON_CHARS = 200


@dataclass(frozen=True, kw_only=True)
class CancelNotice:
    """Who cancelled a request, and why."""

    request_id: str
    cancel_id: str
    requested_by: str
    reason: str | None = None
    session_id: str | None = None


class RequestCancelled(ControlSignal):
    """The request was cancelled: end it with the CANCELLED response (not a failure)."""

    def __init__(self, notice: CancelNotice) -> None:
        super().__init__(f"request cancelled by {notice.requested_by}")
        self.notice = notice


class _Scope:
    """One running piece of work of a request that a cancel can cut short."""

    def __init__(self, timeout: asyncio.Timeout) -> None:
        self.timeout = timeout
        self.notice: CancelNotice | None = None

    def abort(self, notice: CancelNotice) -> bool:
        if self.notice is not None:
            return False
        self.notice = notice
        try:
            self.timeout.reschedule(asyncio.get_running_loop().time())
        except RuntimeError:  # already leaving the scope: nothing left to stop
            return False
        return True


class Cancellations:
    def __init__(self, *, window_s: float = 3600.0, max_remembered: int = MAX_REMEMBERED) -> None:
        self._window_s = window_s
        self._max = max_remembered
        self._cancelled: OrderedDict[str, tuple[CancelNotice, float]] = OrderedDict()
        self._scopes: dict[str, set[_Scope]] = {}
        self._sessions: dict[str, str] = {}  # session -> its latest cancelled request

    def cancel(self, notice: CancelNotice) -> int:
        """Remember ``notice``'s request as cancelled and stop its running work on this worker;
        returns how many running scopes were stopped."""
        self._cancelled[notice.request_id] = (notice, time.monotonic() + self._window_s)
        self._cancelled.move_to_end(notice.request_id)
        if notice.session_id is not None:
            self._sessions[notice.session_id] = notice.request_id
        while len(self._cancelled) > self._max:
            _, (old, _) = self._cancelled.popitem(last=False)
            if old.session_id is not None and self._sessions.get(old.session_id) == old.request_id:
                del self._sessions[old.session_id]
        return sum(scope.abort(notice) for scope in list(self._scopes.get(notice.request_id, ())))

    def notice(self, request_id: str) -> CancelNotice | None:
        """The cancel of ``request_id``, if it is cancelled (within the window)."""
        found = self._cancelled.get(request_id)
        if found is None:
            return None
        notice, expires = found
        if time.monotonic() > expires:
            del self._cancelled[request_id]
            return None
        return notice

    def session_cancelled(self, session_id: str) -> bool:
        """A request of ``session_id`` is cancelled (within the window): the retry forwarder
        sends a record of the session back at once instead of holding it."""
        request_id = self._sessions.get(session_id)
        if request_id is not None and self.notice(request_id) is None:
            self._sessions.pop(session_id, None)
            return False
        return request_id is not None

    def check(self, request_id: str) -> None:
        """Raise :class:`RequestCancelled` when ``request_id`` is cancelled."""
        notice = self.notice(request_id)
        if notice is not None:
            raise RequestCancelled(notice)

    def running(self, request_id: str) -> bool:
        """Work of ``request_id`` runs in an abortable scope on this worker."""
        return bool(self._scopes.get(request_id))

    def abortable(self, request_id: str) -> Abortable:
        """Run the body (``async with``) so that a cancel of ``request_id`` stops it
        (RequestCancelled)."""
        return Abortable(self, request_id)

    def _enter(self, request_id: str, scope: _Scope) -> None:
        self._scopes.setdefault(request_id, set()).add(scope)

    def _leave(self, request_id: str, scope: _Scope) -> None:
        scopes = self._scopes.get(request_id)
        if scopes is not None:
            scopes.discard(scope)
            if not scopes:
                del self._scopes[request_id]


class Abortable:
    """The scope of :meth:`Cancellations.abortable`: an ``asyncio.timeout`` that a cancel of the
    request expires at once, turned into :class:`RequestCancelled`. A plain class rather than a
    generator-based context manager: it is entered once per model call."""

    __slots__ = ("_cancellations", "_request_id", "_scope")

    def __init__(self, cancellations: Cancellations, request_id: str) -> None:
        self._cancellations = cancellations
        self._request_id = request_id
        self._scope: _Scope | None = None

    async def __aenter__(self) -> None:
        self._cancellations.check(self._request_id)
        scope = self._scope = _Scope(asyncio.timeout(None))
        self._cancellations._enter(self._request_id, scope)
        try:
            await scope.timeout.__aenter__()
        except BaseException:
            self._cancellations._leave(self._request_id, scope)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope = self._scope
        assert scope is not None
        try:
            await scope.timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError:  # the scope expired: only a cancel expires it
            if scope.notice is None:
                raise
            raise RequestCancelled(scope.notice) from None
        finally:
            self._cancellations._leave(self._request_id, scope)
        if isinstance(exc, TimeoutError) and scope.notice is not None:
            raise RequestCancelled(scope.notice) from None
