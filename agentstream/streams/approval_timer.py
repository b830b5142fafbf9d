"""Approval timeouts: parked batches past their due time get TIMEOUT decisions.

Every worker that runs the ``approvals`` stage sweeps the due-time index
(state/parking.py) every ``tools.approval_sweep_interval_s``: each park past due is leased (so
one worker handles it; a crashed worker's lease ends and another takes it), and for each of its
undecided approvals a decision ``TIMEOUT`` by ``agentstream:timeout`` is published to
``agent.approval-decisions``. From there it is a decision like any other: the first decision of
an approval counts, it is audited, and the last one resumes the batch (the model is told the
call was denied). Nothing waits in memory: a parked batch needs only its Redis entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from agentstream.config import Settings
from agentstream.observability.logging import get_logger
from agentstream.processors.approval_gate import TIMEOUT, TIMEOUT_APPROVER
from agentstream.processors.base import Outbound
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.contracts import ApprovalDecision
from agentstream.state.parking import ParkingLot, ParkRef

log = get_logger(__name__)
Publish = Callable[[list[Outbound]], Awaitable[None]]
#: How long a sweep holds a due park before another sweep may take it again.
LEASE_MS = 30_000


class ApprovalTimer:
    def __init__(
        self, settings: Settings, parking: ParkingLot, codec: AvroCodec, publish: Publish
    ) -> None:
        self._settings = settings
        self._parking = parking
        self._codec = codec
        self._publish = publish
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        interval = self._settings.tools.approval_sweep_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception as exc:  # noqa: BLE001 - the next sweep tries again (leases end)
                log.warning("approval timeout sweep failed", error=type(exc).__name__)

    async def sweep(self) -> int:
        """Publish TIMEOUT decisions for the parks past due; the number published."""
        now_ms = int(time.time() * 1000)
        published = 0
        for ref in await self._parking.due(now_ms, lease_ms=LEASE_MS):
            waits = await self._parking.open_waits(ref)
            if not waits:
                continue
            await self._publish([self._timeout(ref, w) for w in waits])
            published += len(waits)
        if published:
            log.info("approvals timed out", decisions=published)
        return published

    def _timeout(self, ref: ParkRef, approval_id: str) -> Outbound:
        request_id = approval_id.rsplit(":", 2)[0]
        decision = ApprovalDecision(
            approval_id=approval_id,
            request_id=request_id,
            session_id=ref.session_id,
            user_id=ref.user_id,
            tenant_id=ref.tenant_id,
            decision=TIMEOUT,
            approver_id=TIMEOUT_APPROVER,
            reason=f"no decision within {self._settings.tools.approval_timeout_s:g} s",
            decided_at=datetime.now(UTC),
        )
        return Outbound(
            topic=self._settings.topics.approval_decisions,
            key=ref.session_id.encode(),
            value=self._codec.encode_record(decision),
        )
