"""Hypothesis strategies for bad input: wire bytes, AgentRequest field values, record headers.

Shared by the property tests (tests/test_fuzz_*.py, default example counts) and the long run
(``python -m chaos fuzz``).
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from agentstream.schemas import dead_letter as dl
from agentstream.schemas.catalog import LOCAL_IDS
from agentstream.schemas.loader import SCHEMA_NAMES

contract_names = st.sampled_from(SCHEMA_NAMES)

# -- wire bytes ---------------------------------------------------------------------------------

_known_ids = sorted(LOCAL_IDS.values())
_header = st.builds(
    lambda magic, schema_id: struct.pack(">bI", magic, schema_id),
    st.one_of(st.just(0), st.integers(-128, 127)),
    st.one_of(st.sampled_from(_known_ids), st.integers(0, 2**32 - 1)),
)
#: Arbitrary bytes, and arbitrary bodies behind a plausible Confluent wire header.
wire_bytes = st.one_of(
    st.binary(max_size=256),
    st.builds(lambda head, body: head + body, _header, st.binary(max_size=512)),
)


@st.composite
def mutated(
    draw: st.DrawFn, seeds: dict[str, list[bytes]], names: tuple[str, ...] = ()
) -> tuple[str, bytes]:
    """A valid encoding of some contract (from ``seeds``, of one of ``names`` if given) with a
    few bytes changed, cut or added; returns the contract name and the bytes."""
    name = draw(st.sampled_from(sorted(names or seeds)))
    data = bytearray(draw(st.sampled_from(seeds[name])))
    for _ in range(draw(st.integers(1, 4))):
        _mutate(draw, data)
    return name, bytes(data)


def _mutate(draw: st.DrawFn, data: bytearray) -> None:
    if not data:
        data.extend(draw(st.binary(min_size=1, max_size=8)))
        return
    at = draw(st.integers(0, len(data) - 1))
    kind = draw(st.sampled_from(("flip", "set", "cut", "truncate", "insert", "varint")))
    if kind == "flip":
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif kind == "set":
        data[at] = draw(st.sampled_from((0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)))
    elif kind == "cut":
        del data[at : at + draw(st.integers(1, 16))]
    elif kind == "truncate":
        del data[at:]
    elif kind == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    else:  # a huge or negative Avro length / count (zig-zag varint)
        data[at:at] = draw(
            st.sampled_from(
                (b"\xff\xff\xff\xff\x0f", b"\x01", b"\x81\x80\x80\x80\x80\x80\x80\x80\x80\x01")
            )
        )


# -- AgentRequest field values ------------------------------------------------------------------

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
valid_ids = st.builds(
    str.__add__, st.sampled_from(_ALNUM), st.text(alphabet=_ALNUM + "._:@-", max_size=20)
)
ids = st.one_of(
    valid_ids,
    st.text(max_size=40),
    st.sampled_from(["", " ", "a" * 129, "../etc", "a\x00b", "\u202eabc", "é", "a b", "{tag}"]),
)
_text_specials = st.sampled_from(
    [
        "",
        " \t\n ",
        "\u200b\u200b",
        "[fail] add 1 and 2",
        "[loop] again",
        "what is 1/0",
        "what is 9**9**9",
        "what is 10 ** 400",
        "calculate (((((((1)))))))",
        "what time is it in Atlantis/Nowhere",
        "what time is it in ../../etc/passwd",
        "\u202eadd 2 and 3",
        "x" * 40_000,
        "ü" * 20_000,
    ]
)
messages = st.one_of(
    st.text(max_size=200),
    _text_specials,
    st.builds(lambda a, b: f"what is {a} + {b}", st.integers(), st.integers()),
    st.builds(lambda a, b: f"divide {a} by {b}", st.floats(), st.floats()),
)
metadata = st.one_of(
    st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=5),
    st.dictionaries(st.text(max_size=5), st.just("v" * 5000), min_size=1, max_size=2),
    st.integers(60, 70).map(lambda n: {f"key{i}": "" for i in range(n)}),
)
tool_names = st.one_of(
    st.sampled_from(["calculator", "current_time", "calculator", "unknown.tool", ""]),
    st.text(max_size=20),
)
allowed_tools = st.one_of(
    st.lists(tool_names, max_size=4),
    st.integers(60, 70).map(lambda n: ["calculator"] * n),
    st.integers(65, 66).map(lambda n: [f"tool{i}" for i in range(n)]),
)
_moments = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.just(UTC),
)
deadlines = st.one_of(
    st.none(),
    _moments,
    st.sampled_from((timedelta(seconds=-1), timedelta(days=1))).map(
        lambda d: datetime.now(UTC) + d
    ),
)


@st.composite
def agent_requests(draw: st.DrawFn) -> dict[str, Any]:
    """An AgentRequest record (dict) with arbitrary field values (each of the right Avro type)."""
    # mostly valid ids, so that the other fields get past the id check
    id_values = valid_ids if draw(st.integers(0, 4)) else ids
    return {
        "request_id": draw(id_values),
        "session_id": draw(id_values),
        "user_id": draw(id_values),
        "tenant_id": draw(id_values),
        "message": draw(messages),
        "allowed_tools": draw(allowed_tools),
        "metadata": draw(metadata),
        "created_at": draw(_moments),
        "deadline": draw(deadlines),
    }


# -- headers ------------------------------------------------------------------------------------

_header_names = st.one_of(
    st.sampled_from(
        (
            *dl.DLQ_HEADERS,
            *dl.RETRY_HEADERS,
            *dl.OMITTED_HEADERS,
            dl.REPLAYED_FROM,
            "traceparent",
            "tracestate",
        )
    ),
    st.text(max_size=20),
)
_numberish = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(
        ["", " 3 ", "+2", "1_000", "0x10", "3.0", "nan", "inf", "-0", "٣", "1e3", "9" * 5000]
    ),
    st.floats().map(repr),
).map(str.encode)
header_values = st.one_of(_numberish, st.binary(max_size=40), st.text(max_size=40).map(str.encode))
_any_headers = st.lists(st.tuples(_header_names, header_values), max_size=6)


@st.composite
def headers(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """Arbitrary headers; most carry an attempt count, a retry origin and a due time."""
    out = draw(_any_headers)
    for name in (dl.ATTEMPT, dl.RETRY_ORIGIN, dl.RETRY_DUE):
        if draw(st.integers(0, 3)):
            value = st.just(b"agent.generation") if name == dl.RETRY_ORIGIN else header_values
            out.insert(draw(st.integers(0, len(out))), (name, draw(value)))
    return out
