"""The chaos history checker (chaos/history.py) on hand-made outcomes: what it counts as lost,
duplicated, out of order, wrong, a silent history reset, and the recovery time."""

from __future__ import annotations

from chaos.history import SeenDeadLetter, SeenResponse, check
from chaos.load import LoadPlan, Submitted

PLAN = LoadPlan(sessions=2, requests_per_session=3, rate=10.0, run_id="t")


def submitted(at: float = 100.0) -> dict[str, Submitted]:
    return {r.request_id: Submitted(request=r, sent_at=at) for r in PLAN.requests()}


def answer(
    state: Submitted,
    *,
    at: float = 101.0,
    offset: int | None = None,
    response_id: str | None = None,
    content: str | None = None,
    tokens: int | None = None,
    error_code: str | None = None,
) -> SeenResponse:
    r = state.request
    return SeenResponse(
        request_id=r.request_id,
        response_id=response_id or f"resp-{r.request_id}",
        session_id=r.session_id,
        state="ERROR" if error_code else "COMPLETED",
        error_code=error_code,
        content=r.expected if content is None else content,
        prompt_tokens=100 * (r.index + 1) if tokens is None else tokens,
        at=at,
        position=(0, r.index if offset is None else offset),
    )


def all_answered(subs: dict[str, Submitted]) -> list[SeenResponse]:
    return [answer(s) for s in subs.values()]


def test_plan_is_round_robin_with_checkable_answers() -> None:
    requests = PLAN.requests()
    assert [r.session_id for r in requests[:4]] == ["t-s000", "t-s001", "t-s000", "t-s001"]
    assert all(r.expected.startswith("The answer is ") for r in requests)
    assert PLAN.duration_s == 0.6


def test_a_clean_run_passes() -> None:
    subs = submitted()
    verdict = check(subs, all_answered(subs), [], fault_end=100.5)
    assert verdict.answered_once == 6
    assert not verdict.failed
    assert verdict.recovery_s == 0.5


def test_lost_duplicated_and_copies() -> None:
    subs = submitted()
    states = list(subs.values())
    responses = all_answered(subs)[1:]  # the first request is lost
    responses.append(answer(states[1]))  # the same response id again: a copy
    responses.append(answer(states[2], response_id="other"))  # a second answer: duplicated
    dead = [SeenDeadLetter(request_id=states[3].request.request_id, topic="t", code="X", at=1)]
    verdict = check(subs, responses, dead, fault_end=100.5)
    assert (verdict.lost, verdict.copies, verdict.duplicated) == (1, 1, 2)
    assert verdict.lost_ids == [states[0].request.request_id]
    assert verdict.recovery_s is None  # never: a request from before the fault end is lost
    assert verdict.failed


def test_a_dead_letter_is_a_terminal_outcome_but_fails_the_run() -> None:
    subs = submitted()
    first = next(iter(subs.values()))
    responses = all_answered(subs)[1:]
    dead = [SeenDeadLetter(request_id=first.request.request_id, topic="t", code="X", at=102)]
    verdict = check(subs, responses, dead, fault_end=None)
    assert (verdict.answered_once, verdict.lost, verdict.dead_letters) == (6, 0, 1)
    assert verdict.failed  # every request of the load is valid: a dead letter is a failure


def test_order_violations_and_wrong_answers() -> None:
    subs = submitted()
    s0 = [s for s in subs.values() if s.request.session_id == "t-s000"]
    responses = [answer(s0[0], offset=0), answer(s0[2], offset=1), answer(s0[1], offset=2)]
    responses += [answer(s, content="The answer is 0.!") for s in subs.values() if s not in s0]
    verdict = check(subs, responses, [], fault_end=None)
    assert verdict.order_violations == 1
    assert verdict.wrong_answers == 3
    assert len(verdict.wrong) == 3


def test_history_resets_unless_told() -> None:
    subs = submitted()
    s0 = [s for s in subs.values() if s.request.session_id == "t-s000"]
    s1 = [s for s in subs.values() if s.request.session_id == "t-s001"]
    responses = [answer(s0[0]), answer(s0[1], tokens=50), answer(s0[2])]  # a silent reset
    responses += [answer(s1[0]), answer(s1[1], error_code="CONTEXT_LOST"), answer(s1[2], tokens=1)]
    verdict = check(subs, responses, [], fault_end=None)
    assert verdict.history_resets == 1
    assert dict(verdict.error_responses) == {"CONTEXT_LOST": 1}


def test_not_submitted_requests_are_not_lost() -> None:
    subs = submitted()
    first = next(iter(subs.values()))
    first.sent_at = None
    verdict = check(subs, all_answered(subs)[1:], [], fault_end=None)
    assert (verdict.not_submitted, verdict.lost) == (1, 0)


def test_report_rows_name_every_column() -> None:
    from chaos.report import COLUMNS, markdown, row
    from chaos.scenarios import BY_NAME, ScenarioResult

    subs = submitted()
    verdict = check(subs, all_answered(subs)[1:], [], fault_end=100.5)
    verdict.claimed_after_answer = 2
    result = ScenarioResult(scenario=BY_NAME["redis-client-kill"], verdict=verdict)
    cells = dict(zip(COLUMNS, row(result), strict=True))
    assert (cells["lost"], cells["left claimed"], cells["recovery"]) == ("1", "2", "never")
    assert result.failed
    broken = ScenarioResult(scenario=BY_NAME["baseline"], error="RuntimeError: no broker")
    assert len(row(broken)) == len(COLUMNS)
    assert markdown([result, broken]).count("\n") == 4
