"""agentstream: run AI agents as a production service on Kafka.

The public API (everything else is internal and may change)::

    from agentstream import AgentClient, Settings                  # publish, wait, follow, cancel
    from agentstream import AgentRequest, AgentResponse, AgentState  # the typed contracts
    from agentstream import TestPipeline, FunctionModel            # test agents in memory
    from agentstream import tool                                   # a Python function as a tool
    from agentstream import StreamDelta, StreamedText, Feedback    # streaming and feedback
    from agentstream import Agent                                  # define a named agent

Names are imported on first use, so ``import agentstream`` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_EXPORTS = {
    "Agent": "agentstream.agents",
    "AgentClient": "agentstream.client",
    "new_request": "agentstream.client",
    "Settings": "agentstream.config",
    "AgentRequest": "agentstream.schemas.contracts",
    "AgentResponse": "agentstream.schemas.contracts",
    "AgentState": "agentstream.schemas.contracts",
    "ErrorEvent": "agentstream.schemas.contracts",
    "MetricsEvent": "agentstream.schemas.contracts",
    "StreamDelta": "agentstream.schemas.contracts",
    "Feedback": "agentstream.schemas.contracts",
    "StreamedText": "agentstream.client_stream",
    "CancelRequest": "agentstream.schemas.contracts",
    "CancelOutcome": "agentstream.cancel_client",
    "CancelResult": "agentstream.cancel_client",
    "AgentStreamError": "agentstream.exceptions",
    "TestPipeline": "agentstream.testing",
    "FunctionModel": "agentstream.testing",
    "tool_call": "agentstream.testing",
    "tool": "agentstream.tools.python.function",
}
__all__ = [
    "Agent",
    "AgentClient",
    "AgentRequest",
    "AgentResponse",
    "AgentState",
    "AgentStreamError",
    "CancelOutcome",
    "CancelRequest",
    "CancelResult",
    "ErrorEvent",
    "Feedback",
    "FunctionModel",
    "MetricsEvent",
    "Settings",
    "StreamDelta",
    "StreamedText",
    "TestPipeline",
    "__version__",
    "new_request",
    "tool",
    "tool_call",
]

if TYPE_CHECKING:
    from agentstream.agents import Agent
    from agentstream.cancel_client import CancelOutcome, CancelResult
    from agentstream.client import AgentClient, new_request
    from agentstream.client_stream import StreamedText
    from agentstream.config import Settings
    from agentstream.exceptions import AgentStreamError
    from agentstream.schemas.contracts import (
        AgentRequest,
        AgentResponse,
        AgentState,
        CancelRequest,
        ErrorEvent,
        Feedback,
        MetricsEvent,
        StreamDelta,
    )
    from agentstream.testing import FunctionModel, TestPipeline, tool_call
    from agentstream.tools.python.function import tool


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentstream' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
