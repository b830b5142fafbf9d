"""The load generator: N sessions x M requests at a steady rate, with checkable answers.

Every request asks for arithmetic (``what is 417 + 23``, ``multiply 12 by 31``): the local rule
model answers it by calling the calculator tool, so each request passes validation, generation,
tools and generation again, and its answer (``The answer is 440.``) can be checked. Requests are
published with :class:`agentstream.client.AgentClient` (its producer: ``acks=all``), round-robin
over sessions at ``rate`` per second. A session's requests are submitted one after the other (the
next only once the previous one is acknowledged by the broker), so the order of a session's
requests is the order of its records on the partition.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

from aiokafka.errors import KafkaError

from agentstream.client import AgentClient, new_request

log = logging.getLogger(__name__)

SUBMIT_ATTEMPTS = 5
TENANT = "chaos"


@dataclass(frozen=True, kw_only=True)
class PlannedRequest:
    request_id: str
    session_id: str
    index: int
    """Position in its session (0-based)."""
    message: str
    expected: str
    """The content a correct answer has."""


@dataclass(kw_only=True)
class Submitted:
    request: PlannedRequest
    sent_at: float | None = None
    """Wall-clock time (s) the broker acknowledged it; None if it could not be submitted."""
    attempts: int = 0


@dataclass(frozen=True, kw_only=True)
class LoadPlan:
    sessions: int
    requests_per_session: int
    rate: float
    """Requests per second, over all sessions."""
    seed: int = 0
    run_id: str = "r0"

    @property
    def total(self) -> int:
        return self.sessions * self.requests_per_session

    @property
    def duration_s(self) -> float:
        return self.total / self.rate

    def requests(self) -> list[PlannedRequest]:
        """All requests in submission order (round-robin over sessions)."""
        rng = random.Random(self.seed)
        out = []
        for index in range(self.requests_per_session):
            for s in range(self.sessions):
                session_id = f"{self.run_id}-s{s:03d}"
                message, expected = arithmetic(rng)
                out.append(
                    PlannedRequest(
                        request_id=f"{session_id}-r{index:03d}",
                        session_id=session_id,
                        index=index,
                        message=message,
                        expected=expected,
                    )
                )
        return out


def arithmetic(rng: random.Random) -> tuple[str, str]:
    """A question the local model answers through the calculator, and its correct answer."""
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    form = rng.randrange(3)
    if form == 0:
        return f"what is {a} + {b}", f"The answer is {a + b}."
    if form == 1:
        return f"multiply {a} by {b}", f"The answer is {a * b}."
    return f"subtract {b} from {a}", f"The answer is {a - b}."


@dataclass(kw_only=True)
class LoadGenerator:
    client: AgentClient
    plan: LoadPlan
    submitted: dict[str, Submitted] = field(default_factory=dict)
    submit_errors: int = 0

    async def run(self) -> None:
        """Submit every planned request on schedule; returns when all are submitted (or given
        up after :data:`SUBMIT_ATTEMPTS`)."""
        queues: dict[str, asyncio.Queue[PlannedRequest | None]] = {}
        senders = []
        for request in self.plan.requests():
            if request.session_id not in queues:
                queue: asyncio.Queue[PlannedRequest | None] = asyncio.Queue()
                queues[request.session_id] = queue
                senders.append(asyncio.create_task(self._sender(queue)))
        start = time.monotonic()
        for i, request in enumerate(self.plan.requests()):
            self.submitted[request.request_id] = Submitted(request=request)
            delay = start + i / self.plan.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            queues[request.session_id].put_nowait(request)
        for queue in queues.values():
            queue.put_nowait(None)
        await asyncio.gather(*senders)

    async def _sender(self, queue: asyncio.Queue[PlannedRequest | None]) -> None:
        while (request := await queue.get()) is not None:
            await self._submit(request)

    async def _submit(self, request: PlannedRequest) -> None:
        record = new_request(
            request.message,
            session_id=request.session_id,
            user_id="chaos-user",
            tenant_id=TENANT,
            request_id=request.request_id,
        )
        state = self.submitted[request.request_id]
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            state.attempts = attempt
            try:
                await self.client.submit(record)
            except (KafkaError, OSError) as exc:
                # resending the same request_id is safe: validation drops a repeat
                self.submit_errors += 1
                log.warning("submit failed (%s), attempt %d", type(exc).__name__, attempt)
                await asyncio.sleep(min(2.0, 0.2 * 2**attempt))
                continue
            state.sent_at = time.time()
            return
