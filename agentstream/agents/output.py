"""Structured output: an agent's final answer checked against its output JSON Schema.

The answer must be JSON text that the schema accepts. :func:`check_output` says why not: a
``reason`` for the model's repair turn (the schema's own message, which may quote the answer) and
a ``log_reason`` that names only where and which rule failed (logs never carry content).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jsonschema import validators
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator

_MAX_REASON = 300


@dataclass(frozen=True, kw_only=True)
class OutputCheck:
    """Why an answer does not satisfy the schema."""

    reason: str
    log_reason: str


def check_output(schema: dict[str, Any], content: str) -> OutputCheck | None:
    """None when ``content`` is JSON the schema accepts."""
    try:
        value = json.loads(content)
    except ValueError:
        return OutputCheck(reason="the answer is not JSON", log_reason="not JSON")
    error = best_match(_validator(json.dumps(schema, sort_keys=True)).iter_errors(value))
    if error is None:
        return None
    where = "/" + "/".join(str(p) for p in error.absolute_path)
    return OutputCheck(
        reason=f"at {where}: {error.message[:_MAX_REASON]}",
        log_reason=f"at {where}: {error.validator} failed",
    )


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Validator:
    schema = json.loads(schema_json)
    cls = validators.validator_for(schema)
    validator: Validator = cls(schema)
    return validator
