from __future__ import annotations

from agentstream.llm.prompt import build_messages
from agentstream.processors.sanitize import sanitize_text, valid_id


def test_sanitize_strips_controls_and_bidi_and_normalizes() -> None:
    assert sanitize_text(" he\x00llo\x1b[31m \u202eevil\r\nnext\tok ") == "hello[31m evil\nnext\tok"
    assert sanitize_text("e\u0301") == "\u00e9"  # NFC
    assert sanitize_text("\x00\x01 \n") == ""


def test_ids() -> None:
    assert valid_id("user-1@acme.com")
    assert not valid_id("")
    assert not valid_id("has space")
    assert not valid_id("x" * 129)
    assert not valid_id("-leading")


def _entry(role: str, content: str, **kw: object) -> dict[str, object]:
    return {
        "role": role,
        "content": content,
        "tool_calls": [],
        "tool_call_id": None,
        "name": None,
        "request_id": "r",
        "turn": 0,
        **kw,
    }


def test_budget_drops_oldest_keeps_system_and_no_orphan_tool_results() -> None:
    history = [_entry("user", "a" * 400), _entry("assistant", "b" * 400)]
    history.append(
        _entry(
            "assistant",
            "",
            tool_calls=[
                {"call_id": "c1", "name": "calculator", "arguments": {"expression": "1+1"}}
            ],
        )
    )
    history.append(_entry("tool", "2", tool_call_id="c1", name="calculator"))
    history.append(_entry("user", "latest question"))
    full = build_messages("sys", history, 100_000)
    assert [m.role for m in full] == ["system", "user", "assistant", "assistant", "tool", "user"]
    tight = build_messages("sys", history, 60)
    assert tight[0].role == "system"
    assert tight[0].content == "sys"
    assert tight[-1].content == "latest question"
    assert len(tight) < len(full)
    assert tight[1].role != "tool"
    # even a budget too small for anything keeps the newest message
    assert build_messages("sys", history, 1)[-1].content == "latest question"
