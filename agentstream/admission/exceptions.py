"""Admission errors.

::

    AgentStreamError
    └── AdmissionError                    (agentstream.admission)
        ├── AdmissionStoreUnavailable     retriable = True
        └── AdmissionDenied               code RATE_LIMITED or BUDGET_EXCEEDED

A denial is a :class:`~agentstream.admission.decisions.Denial` value; it is raised only from
inside an LLM step (:class:`AdmissionDenied`), where the generation stage turns it into the
terminal RATE_LIMITED or BUDGET_EXCEEDED response. Its code and ``retriable`` come from the denial,
so any handler of project errors answers it correctly.
"""

from __future__ import annotations

from agentstream.admission.decisions import Denial
from agentstream.exceptions import AgentStreamError, ErrorCode


class AdmissionError(AgentStreamError):
    code = ErrorCode.ADMISSION_ERROR


class AdmissionStoreUnavailable(AdmissionError):
    """Redis did not answer an admission call in time (connection refused, timeout, ...)."""

    code = ErrorCode.ADMISSION_STORE_UNAVAILABLE
    retriable = True


class AdmissionDenied(AdmissionError):
    """An LLM call was not admitted (token rate limit or daily budget)."""

    def __init__(self, denial: Denial) -> None:
        super().__init__(denial.message)
        self.denial = denial
        self.code = ErrorCode(denial.code)
        self.retriable = denial.retriable
        self.message = denial.message
        self.metadata = denial.metadata
