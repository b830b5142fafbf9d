"""The key-ordered runner and in-order acks (pure asyncio; no broker involved)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any

from agentstream.processors.base import Inbound, Outbound, StageResult
from agentstream.processors.signals import DeadLetter
from agentstream.resilience.outage import OutageGate
from agentstream.streams.acks import PartitionAcks
from agentstream.streams.policy import FailurePolicy
from agentstream.streams.runner import StageRunner
from tests.support.wait import wait_until


def test_partition_acks_hold_later_completions_until_earlier_ones_finish() -> None:
    acked: list[int] = []
    acks = PartitionAcks()
    for offset in range(5):
        acks.track(offset, lambda o=offset: acked.append(o))
    assert acks.complete(3) == 0
    assert acks.complete(1) == 0
    assert acked == []
    assert acks.complete(0) == 2
    assert acked == [0, 1]
    acks.complete(4)
    acks.complete(2)
    assert acked == [0, 1, 2, 3, 4]
    assert acks.acked_through == 4
    assert len(acks) == 0


async def _drop(records: list[Outbound]) -> None:
    return None


def make_runner(handler: Any, **overrides: Any) -> StageRunner:
    """A runner whose publishing and dead-lettering do nothing unless a test says otherwise."""
    kwargs: dict[str, Any] = {
        "stage": "s",
        "handler": handler,
        "publish": _drop,
        "dead_letter": lambda *a: StageResult(),
        "max_in_flight": 10,
        **overrides,
    }
    return StageRunner(**kwargs)


def _msg(offset: int, key: str, partition: int = 0) -> Inbound:
    return Inbound(
        topic="t",
        partition=partition,
        offset=offset,
        timestamp_ms=0,
        key=key.encode(),
        value=str(offset).encode(),
    )


async def test_same_key_in_order_different_keys_concurrently_acks_in_offset_order() -> None:
    rng = random.Random(1)
    running: dict[bytes | None, int] = {}
    seen: dict[bytes | None, list[int]] = {}
    max_parallel = 0
    published: list[Outbound] = []
    acked: list[int] = []

    async def handler(msg: Inbound) -> StageResult:
        nonlocal max_parallel
        assert running.get(msg.key, 0) == 0, "two events of one key ran at once"
        running[msg.key] = 1
        max_parallel = max(max_parallel, sum(running.values()))
        await asyncio.sleep(rng.uniform(0, 0.01))
        seen.setdefault(msg.key, []).append(msg.offset)
        running[msg.key] = 0
        return StageResult(records=[Outbound(topic="o", key=msg.key, value=msg.value)])

    async def publish(records: list[Outbound]) -> None:
        published.extend(records)

    runner = make_runner(handler, publish=publish, max_in_flight=50)
    for offset in range(300):
        await runner.submit(_msg(offset, f"k{offset % 30}"), lambda o=offset: acked.append(o))
    assert await runner.drain(10)
    assert acked == list(range(300))
    for key, offsets in seen.items():
        assert offsets == sorted(offsets), key
    assert max_parallel > 10
    assert len(published) == 300


async def test_backpressure_bounds_in_flight() -> None:
    gate = asyncio.Event()

    async def handler(msg: Inbound) -> StageResult:
        await gate.wait()
        return StageResult()

    runner = make_runner(handler, max_in_flight=5)
    for offset in range(5):
        await runner.submit(_msg(offset, f"k{offset}"), lambda: None)
    blocked = asyncio.create_task(runner.submit(_msg(5, "k5"), lambda: None))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    assert runner.in_flight == 5
    gate.set()
    await asyncio.wait_for(blocked, 5)
    assert await runner.drain(5)


async def test_poison_record_is_dead_lettered_and_the_partition_moves_on() -> None:
    acked: list[int] = []
    dead: list[tuple[int, str, int]] = []

    async def handler(msg: Inbound) -> StageResult:
        if msg.offset == 1:
            raise RuntimeError("boom")
        if msg.offset == 2:
            raise DeadLetter("UNDECODABLE", "bad bytes")
        return StageResult()

    def to_dlq(msg: Inbound, code: str, exc: BaseException, attempt: int) -> StageResult:
        dead.append((msg.offset, code, attempt))
        return StageResult()

    runner = make_runner(handler, dead_letter=to_dlq, policy=FailurePolicy(backoff_base_s=0.001))
    for offset in range(4):
        await runner.submit(_msg(offset, "same"), lambda o=offset: acked.append(o))
    assert await runner.drain(5)
    assert acked == [0, 1, 2, 3]
    assert dead == [(1, "INTERNAL_ERROR", 3), (2, "UNDECODABLE", 1)]
    assert runner.stats.retries == 2


async def test_revoke_finishes_what_it_can_and_abandons_the_rest_unacked() -> None:
    acked: list[tuple[int, int]] = []
    slow_gate = asyncio.Event()

    async def handler(msg: Inbound) -> StageResult:
        if msg.value == b"slow":
            await slow_gate.wait()
        return StageResult()

    runner = make_runner(handler)

    def item(partition: int, offset: int, key: str, value: bytes) -> Inbound:
        return Inbound(
            topic="t",
            partition=partition,
            offset=offset,
            timestamp_ms=0,
            key=key.encode(),
            value=value,
        )

    await runner.submit(item(0, 0, "a", b"slow"), lambda: acked.append((0, 0)))
    await runner.submit(item(0, 1, "b", b"fast"), lambda: acked.append((0, 1)))
    await runner.submit(item(1, 0, "c", b"fast"), lambda: acked.append((1, 0)))
    abandoned = await runner.revoke({("t", 0)}, grace_s=0.2)
    assert abandoned == 1
    assert (0, 0) not in acked
    assert (0, 1) not in acked  # finished, but behind an unfinished offset: never acked
    assert (1, 0) in acked
    assert await runner.drain(1)
    assert runner.in_flight == 0


class _Down(ConnectionError):
    """Stands in for "Redis unreachable" (the gate is told which errors mean an outage)."""


class _Probe:
    """A dependency whose availability the test switches; the gate probes it."""

    def __init__(self) -> None:
        self.up = True

    async def __call__(self) -> None:
        if not self.up:
            raise _Down("still down")


async def test_outage_pauses_intake_and_waits_instead_of_failing() -> None:
    probe = _Probe()
    gate = OutageGate(
        "dep", probe, is_outage=lambda e: isinstance(e, _Down), backoff_s=(0.01, 0.02)
    )
    calls: list[int] = []
    dead: list[int] = []

    async def handler(msg: Inbound) -> StageResult:
        calls.append(msg.offset)
        if not probe.up:
            raise _Down("dependency down")
        return StageResult()

    runner = make_runner(
        handler,
        gate=gate,
        outage_wait_s=30.0,
        policy=FailurePolicy(max_attempts=2, backoff_base_s=0.0),
        dead_letter=lambda msg, *a: dead.append(msg.offset) or StageResult(),
    )
    acked: list[int] = []
    probe.up = False
    await runner.submit(_msg(0, "a"), lambda: acked.append(0))
    await wait_until(lambda: not gate.up, "the gate to close")
    # intake is paused while the dependency is down: the next submit waits
    second = asyncio.create_task(runner.submit(_msg(1, "b"), lambda: acked.append(1)))
    await asyncio.sleep(0.1)  # a window in which a paused runner must not take the event
    assert not second.done()
    assert calls == [0]  # the failed event waits for the dependency, not burning its attempts
    probe.up = True
    await wait_until(lambda: sorted(acked) == [0, 1], "both events processed after recovery")
    await second
    assert dead == []
    assert runner.stats.outage_waits == 1
    assert calls.count(0) == 2
    await gate.aclose()


async def test_post_publish_step_is_retried_until_it_succeeds() -> None:
    attempts: list[int] = []

    async def release() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("stale pooled connection")

    async def handler(msg: Inbound) -> StageResult:
        return StageResult(then=release)

    runner = make_runner(handler)
    acked: list[int] = []
    await runner.submit(_msg(0, "a"), lambda: acked.append(0))
    await wait_until(lambda: acked == [0], "the event acked once its release succeeded")
    assert len(attempts) == 3
    assert runner.stats.post_publish_retries == 2


async def test_post_publish_step_failing_while_stopping_leaves_the_event_unacked() -> None:
    async def release() -> None:
        raise ConnectionError("Redis down")

    async def handler(msg: Inbound) -> StageResult:
        return StageResult(then=release)

    runner = make_runner(handler)
    acked: list[int] = []
    await runner.submit(_msg(0, "a"), lambda: acked.append(0))
    await wait_until(lambda: runner.stats.post_publish_retries >= 1, "a failed release")
    assert await runner.drain(5.0)
    assert acked == []  # redelivered to the next owner, whose run releases the session


async def test_an_idle_runner_drains_at_once_even_with_no_grace() -> None:
    # Python 3.11's wait_for(event.wait(), timeout=0) times out even when the event is set: an
    # idle worker's clean stop used to log "shutdown grace expired".
    runner = make_runner(lambda msg: StageResult())
    assert await runner.drain(0)
    done = asyncio.Event()

    async def handler(msg: Inbound) -> StageResult:
        await done.wait()
        return StageResult()

    busy = make_runner(handler)
    await busy.submit(_msg(0, "k"), lambda: None)
    assert not await busy.drain(0)
    done.set()
    assert await busy.drain(5)


def _pair(second: Any, **overrides: Any) -> tuple[StageRunner, StageRunner, list[Outbound]]:
    """A first stage whose output (topic "next") is handed over to a second stage's runner."""
    published: list[Outbound] = []

    async def publish(records: list[Outbound]) -> None:
        published.extend(records)

    async def first(msg: Inbound) -> StageResult:
        if msg.value == b"refuse":  # a refusal: two records, published as usual
            records = [Outbound(topic="answers", key=msg.key, value=b"no")] * 2
            return StageResult(records=records)
        return StageResult(records=[Outbound(topic="next", key=msg.key, value=b"turn" + msg.value)])

    a = make_runner(first, stage="a", publish=publish)
    b = make_runner(second, stage="b", publish=publish, **overrides)
    a.hand_over("next", b)
    return a, b, published


async def test_hand_over_acks_the_consumed_offset_only_when_the_next_stage_is_done() -> None:
    release = asyncio.Event()
    got: list[Inbound] = []

    async def second(msg: Inbound) -> StageResult:
        got.append(msg)
        await release.wait()
        return StageResult(records=[Outbound(topic="answers", key=msg.key, value=b"done")])

    a, b, published = _pair(second)
    acked: list[int] = []
    await a.submit(_msg(7, "s1"), lambda: acked.append(7))
    await a.submit(_msg(8, "s2", partition=0), lambda: acked.append(8))
    await wait_until(lambda: len(got) == 2, what="both handed over")
    assert [m.topic for m in published] == []  # nothing went through the broker
    first_event = next(m for m in got if m.offset == 7)
    assert first_event.topic == "next"
    assert first_event.via == "t"
    assert first_event.partition == 0
    assert first_event.value == b"turn7"
    assert first_event.key == b"s1"
    assert acked == []
    assert a.pending(("t", 0)) == 2
    assert b.pending(("t", 0)) == 2
    assert a.stats.handed_over == 2
    assert a.in_flight == 0
    assert b.in_flight == 2
    release.set()
    await wait_until(lambda: acked == [7, 8], what="acked in offset order")
    assert [m.value for m in published] == [b"done", b"done"]
    assert a.pending(("t", 0)) == 0
    assert b.pending(("t", 0)) == 0


async def test_an_output_that_is_not_one_record_for_the_topic_is_published() -> None:
    async def second(msg: Inbound) -> StageResult:  # pragma: no cover - never handed anything
        raise AssertionError("handed over")

    a, _b, published = _pair(second)
    acked: list[int] = []
    await a.submit(replace(_msg(0, "s"), value=b"refuse"), lambda: acked.append(0))
    await wait_until(lambda: acked == [0], what="acked")
    assert [m.topic for m in published] == ["answers", "answers"]
    assert a.stats.handed_over == 0


async def test_a_handed_over_failure_takes_the_receiving_stage_s_dead_letter_path() -> None:
    dead: list[Inbound] = []

    async def second(msg: Inbound) -> StageResult:
        raise DeadLetter("UNDECODABLE", "bad turn")

    def dead_letter(msg: Inbound, code: str, exc: BaseException, attempt: int) -> StageResult:
        dead.append(msg)
        return StageResult(records=[Outbound(topic="next.dlq", key=msg.key, value=msg.value)])

    a, _b, published = _pair(second, dead_letter=dead_letter)
    acked: list[int] = []
    await a.submit(_msg(3, "s"), lambda: acked.append(3))
    await wait_until(lambda: acked == [3], what="acked after the dead letter")
    assert [(m.topic, m.via) for m in dead] == [("next", "t")]
    assert [(m.topic, m.value) for m in published] == [("next.dlq", b"turn3")]


async def test_revoke_gives_handed_over_work_its_grace_then_leaves_the_offset_unacked() -> None:
    release = asyncio.Event()

    async def second(msg: Inbound) -> StageResult:
        if msg.key == b"slow":
            await release.wait()
        return StageResult()

    a, b, _ = _pair(second)
    acked: list[int] = []
    await a.submit(_msg(0, "fast"), lambda: acked.append(0))
    await a.submit(_msg(1, "slow"), lambda: acked.append(1))
    await wait_until(lambda: b.in_flight == 1, what="the fast one done")
    abandoned = await asyncio.gather(
        a.revoke({("t", 0)}, grace_s=0.2), b.revoke({("t", 0)}, grace_s=0.2)
    )
    assert list(abandoned) == [0, 1]  # the handed-over event was the unfinished one
    assert acked == [0]
    assert b.in_flight == 0
    assert b.pending(("t", 0)) == 0
    release.set()


async def test_nothing_is_handed_to_a_stopping_runner_and_the_offset_stays_unacked() -> None:
    async def second(msg: Inbound) -> StageResult:  # pragma: no cover - never handed anything
        raise AssertionError("handed over")

    a, b, published = _pair(second)
    assert await b.drain(0)
    acked: list[int] = []
    await a.submit(_msg(0, "s"), lambda: acked.append(0))
    assert await a.drain(1)
    assert acked == []
    assert published == []
    assert a.in_flight == 0


async def test_without_a_tracing_sdk_outputs_carry_the_record_s_trace_context_on(
    monkeypatch: Any,
) -> None:
    from agentstream.observability import tracing

    monkeypatch.setattr(tracing, "recording", lambda: False)  # no SDK: no spans are started
    parent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    published: list[Outbound] = []

    async def publish(records: list[Outbound]) -> None:
        published.extend(records)

    async def handler(msg: Inbound) -> StageResult:
        return StageResult(records=[Outbound(topic="o", key=msg.key, value=b"v")])

    runner = make_runner(handler, publish=publish)
    msg = replace(_msg(0, "k"), headers=[("traceparent", parent), ("other", b"x")])
    acked: list[int] = []
    await runner.submit(msg, lambda: acked.append(0))
    await wait_until(lambda: acked == [0], what="acked")
    assert published[0].headers == [("traceparent", parent)]


async def test_a_revoke_while_the_hand_over_waits_for_a_full_stage_frees_the_slot() -> None:
    release = asyncio.Event()

    async def second(msg: Inbound) -> StageResult:
        await release.wait()
        return StageResult()

    a, b, _ = _pair(second, max_in_flight=1)
    acked: list[int] = []
    await a.submit(_msg(0, "s1"), lambda: acked.append(0))
    await a.submit(_msg(1, "s2"), lambda: acked.append(1))  # waits: the second stage is full
    await wait_until(lambda: b.in_flight == 1 and a.in_flight == 1, what="one handed, one waiting")
    await asyncio.gather(a.revoke({("t", 0)}, grace_s=0.1), b.revoke({("t", 0)}, grace_s=0.1))
    await wait_until(lambda: a.in_flight == 0 and b.in_flight == 0, what="slots freed")
    assert acked == []
    release.set()
