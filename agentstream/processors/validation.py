"""Validation stage: agent.requests -> agent.generation.

Decode (undecodable -> dead letter), validate, sanitize, dedupe by request_id, load or create the
session context, set THINKING, publish turn 0. A request that fails validation is answered with
an ERROR response and an ErrorEvent.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from agentstream.observability.logging import get_logger
from agentstream.processors.base import (
    Inbound,
    Outbound,
    RequestIds,
    StageResult,
    ms_since,
    utcnow,
)
from agentstream.processors.outcomes import Failure, error_event, finish
from agentstream.processors.progress import add_stage_time, new_progress
from agentstream.processors.sanitize import sanitize_text, valid_id
from agentstream.processors.stage import Stage
from agentstream.state.context import AgentContext, ContextStore
from agentstream.state.dedupe import RequestDedupe
from agentstream.state.exceptions import SessionBusyError, SessionForbiddenError

STAGE = "validation"
log = get_logger(__name__)


class RequestRejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ValidationStage(Stage):
    stage = STAGE
    schema = "AgentRequest"

    async def _run(
        self, msg: Inbound, request: dict[str, Any], ids: RequestIds, started: datetime
    ) -> StageResult:
        progress = new_progress(started, len(request["message"].encode()))
        try:
            message, allowed = self._validate(request)
        except RequestRejected as rej:
            log.info("request rejected", code=rej.code)
            return self._refuse(msg, ids, progress, rej.code, rej.message)
        # one round trip: the dedupe marker and the session context
        pipe = self.deps.contexts.pipeline()
        self.deps.dedupe.queue_first_sighting(pipe, ids.tenant_id, ids.request_id, msg.position)
        self.deps.contexts.queue_get(pipe, ids.tenant_id, ids.session_id)
        _, stored, raw_ctx = await pipe.execute()
        if not RequestDedupe.parse(stored, msg.position):
            log.info("duplicate request dropped")
            dup = Failure(
                code="DUPLICATE_REQUEST",
                stage=STAGE,
                message="request_id already accepted; the repeat was not run",
            )
            return StageResult(
                records=[
                    error_event(
                        self.deps,
                        request_id=ids.request_id,
                        failure=dup,
                        session_id=ids.session_id,
                        tenant_id=ids.tenant_id,
                        origin=msg,
                    )
                ]
            )
        shed = self.deps.load.overloaded() if self.deps.load is not None else None
        if shed is not None:  # RESOURCE_EXHAUSTED: refuse new work, answer at once
            log.warning("shedding load", reason=shed)
            text = "The service is overloaded right now; please try again in a few seconds."
            return self._refuse(
                msg,
                ids,
                progress,
                "RESOURCE_EXHAUSTED",
                text,
                retriable=True,
                metadata={"retry_after_s": "5"},
            )
        if self.deps.admission is not None:  # rate limits, budget, then the response cache
            denial, cached = await self.deps.admission.admit(
                **ids.as_fields(),
                message=message,
                allowed_tools=allowed,
                metadata=request["metadata"],
            )
            if denial is not None:
                log.info("request not admitted", code=denial.code, limit=denial.limit)
                return self._refuse(
                    msg,
                    ids,
                    progress,
                    denial.code,
                    denial.message,
                    retriable=denial.retriable,
                    metadata=denial.metadata,
                )
            if cached is not None:
                log.info("answered from the response cache")
                records = finish(
                    self.deps,
                    ids=ids,
                    progress=progress,
                    content=cached.content,
                    confidence=cached.confidence,
                    metadata=cached.metadata(),
                )
                return StageResult(records=records)
        if self.deps.settings.degradation.cached_only:  # no cached answer above: refuse
            text = "Only cached answers are available right now; please try again later."
            return self._refuse(msg, ids, progress, "SERVICE_DEGRADED", text, retriable=True)
        try:
            await self._record_user_turn(
                ids, message, allowed, request["metadata"], ContextStore.parse_get(raw_ctx)
            )
        except RequestRejected as rej:
            log.info("request rejected", code=rej.code)
            return self._refuse(msg, ids, progress, rej.code, rej.message)
        add_stage_time(progress, STAGE, ms_since(started))
        turn = {
            **ids.as_fields(),
            "turn": 0,
            "allowed_tools": allowed,
            "metadata": request["metadata"],
            "tool_results": [],
            "progress": progress,
            "deadline": request["deadline"],
        }
        topic = self.deps.settings.topics.generation
        value = self.deps.codec.encode("GenerationTurn", turn)
        return StageResult(
            records=[Outbound(topic=topic, key=ids.session_id.encode(), value=value)]
        )

    def _refuse(
        self,
        msg: Inbound,
        ids: RequestIds,
        progress: dict[str, Any],
        code: str,
        text: str,
        *,
        retriable: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> StageResult:
        """Answer the request now with an ERROR response (plus its ErrorEvent and metrics)."""
        failure = Failure(code=code, message=text, stage=STAGE, retriable=retriable)
        records = finish(
            self.deps,
            ids=ids,
            progress=progress,
            content=text,
            failure=failure,
            metadata=metadata,
            origin=msg,
        )
        return StageResult(records=records)

    def _validate(self, request: dict[str, Any]) -> tuple[str, list[str]]:
        limits = self.deps.settings.limits
        for field in ("request_id", "session_id", "user_id", "tenant_id"):
            if not valid_id(request[field]):
                raise RequestRejected(
                    "INVALID_REQUEST",
                    f"{field} must be 1-128 characters of letters, digits and ._:@- "
                    "starting with a letter or digit",
                )
        size = len(request["message"].encode())
        if size > limits.max_message_bytes:
            raise RequestRejected(
                "MESSAGE_TOO_LARGE",
                f"message is {size} bytes; the limit is {limits.max_message_bytes} bytes",
            )
        message = sanitize_text(request["message"])
        if not message:
            raise RequestRejected("EMPTY_MESSAGE", "message is empty")
        metadata: dict[str, str] = request["metadata"]
        if len(metadata) > limits.max_metadata_entries or any(
            len(k.encode()) + len(v.encode()) > limits.max_metadata_value_bytes
            for k, v in metadata.items()
        ):
            raise RequestRejected("INVALID_REQUEST", "metadata has too many or too large entries")
        allowed: list[str] = list(dict.fromkeys(request["allowed_tools"]))
        if len(allowed) > limits.max_allowed_tools:
            raise RequestRejected("INVALID_REQUEST", "too many allowed_tools")
        unknown = [t for t in allowed if not self.deps.tools.has(t)]
        if unknown:
            raise RequestRejected("UNKNOWN_TOOL", f"unknown tool(s): {', '.join(unknown)}")
        deadline: datetime | None = request["deadline"]
        if deadline is not None and deadline <= utcnow():
            raise RequestRejected("DEADLINE_EXCEEDED", "the request's deadline has already passed")
        return message, allowed

    async def _record_user_turn(
        self,
        ids: RequestIds,
        message: str,
        allowed: list[str],
        metadata: dict[str, str],
        current: AgentContext | None,
    ) -> None:
        """Append the user turn and make this request the session's active one. Under the
        ``queue`` double-text policy a request waits while an earlier one of its session runs."""
        limits = self.deps.settings.limits

        def change(ctx: AgentContext | None) -> AgentContext | None:
            if ctx is None:
                ctx = AgentContext(
                    session_id=ids.session_id, user_id=ids.user_id, tenant_id=ids.tenant_id
                )
            if any(e["request_id"] == ids.request_id and e["role"] == "user" for e in ctx.history):
                return ctx  # redelivery: the user turn is already recorded
            ctx.history.append(
                {
                    "role": "user",
                    "content": message,
                    "tool_calls": [],
                    "tool_call_id": None,
                    "name": None,
                    "request_id": ids.request_id,
                    "turn": 0,
                }
            )
            ctx.available_tools = allowed
            ctx.state = "THINKING"
            ctx.metadata = {**ctx.metadata, **metadata}
            return ctx

        delay = 0.005
        known: dict[str, Any] = {"current": current}  # the prefetched context, first try only
        while True:
            try:
                await self.deps.contexts.update(
                    ids.tenant_id,
                    ids.session_id,
                    change,
                    claim=ids.request_id,
                    stale_s=limits.session_busy_timeout_s,
                    owner=ids.owner,
                    **known,
                )
                known = {}
            except SessionForbiddenError as forbidden:
                raise RequestRejected(
                    "SESSION_FORBIDDEN", "this session belongs to another user"
                ) from forbidden
            except SessionBusyError as busy:
                if limits.double_text == "reject":
                    raise RequestRejected(
                        "SESSION_BUSY",
                        "this session is still answering an earlier request; send again when "
                        "it has finished",
                    ) from busy
                # Queue policy: this session's later requests wait behind the active one; other
                # sessions keep flowing (the runner holds only this key).
                known = {}
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
                continue
            return
