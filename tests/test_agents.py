"""The agent catalog: loading (files, modules), refusals with file/field/reason, versions, and
the stages serving a named agent (in memory: instructions, tools, limits, structured output)."""

from __future__ import annotations

import ast
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentstream.agents import Agent, AgentDefinitionError, build_catalog, check_output
from agentstream.cli.errors import one_line
from agentstream.config import Settings
from agentstream.llm.base import LLMRequest, LLMResult
from agentstream.testing import FunctionModel, TestPipeline, tool_call

SUPPORT = """\
name = "support"
description = "Answers customers"
instructions = "You are the support agent."
tools = ["calculator"]
max_turns = 3
temperature = 0.2
"""


def _settings(**agents: Any) -> Settings:
    return Settings(redis_url=None, kafka_bootstrap_servers=None, agents=agents)


def _folder(tmp_path: Path, files: dict[str, str]) -> Path:
    folder = tmp_path / "agents"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


# --- loading ------------------------------------------------------------------------------------


def test_a_folder_of_toml_and_yaml_definitions_loads(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path,
        {
            "support.toml": SUPPORT,
            "analyst.yaml": """\
                description: Crunches numbers
                instructions_file: analyst.txt
                tools: ["calc*", "agent.support"]
                output_schema: {"type": "object", "required": ["total"]}
            """,
            "analyst.txt": "You are the analyst.",
            "README.md": "not a definition",
        },
    )
    catalog = build_catalog(_settings(dir=folder, entry_points=False))
    assert catalog.names() == ["analyst", "default", "support"]
    analyst = catalog.get("analyst")  # the name defaults to the file's stem
    assert analyst.instructions == "You are the analyst."
    assert analyst.offers("calculator")
    assert not analyst.offers("current_time")
    assert analyst.delegates_to() == ["support"]
    assert catalog.get(None).name == "default"  # requests naming no agent
    assert catalog.get(None).system_prompt == Settings().llm.system_prompt
    assert catalog.get(None).offers("anything.at_all")  # today's behaviour: every tool


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ('name = "x"\n', "instructions", "missing"),
        ('instructions = "hi"\nmax_turns = 0\n', "max_turns", "greater than or equal to 1"),
        ('instructions = "hi"\ncolour = "blue"\n', "colour", "unknown field"),
        ('instructions = "hi"\nmodel = "gpt-9"\n', "model", "names no route or provider"),
        ('instructions = "hi"\ntools = ["agent.nobody"]\n', "tools", "agent.nobody names no"),
        ('name = "bad name"\ninstructions = "hi"\n', "name", "should match pattern"),
        ('instructions = "hi"\ninstructions_file = "x.txt"\n', "instructions_file", "not both"),
        ('instructions_file = "gone.txt"\n', "instructions_file", "cannot read"),
        (
            'instructions = "hi"\noutput_schema = { type = "nonsense" }\n',
            "output_schema",
            "not a valid JSON Schema",
        ),
        (
            'instructions = "hi"\nlimits = { daily_tokens = -5 }\n',
            "limits.daily_tokens",
            "greater than or equal to 0",
        ),
        ('instructions = "unterminated\n', "", "malformed toml"),
    ],
)
def test_a_broken_definition_is_refused_with_file_field_and_reason(
    tmp_path: Path, text: str, field: str, reason: str
) -> None:
    folder = _folder(tmp_path, {"broken.toml": text})
    with pytest.raises(AgentDefinitionError) as info:
        build_catalog(_settings(dir=folder, entry_points=False))
    error = info.value
    assert error.source.endswith("broken.toml")
    assert error.field == field
    assert reason in error.reason
    line, code = one_line(error)  # the CLI prints one line and exits 2 (a config error)
    assert "broken.toml" in line
    assert reason in line
    assert "\n" not in line
    assert code == 2


def test_two_agents_of_one_name_are_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path, {"a.toml": SUPPORT, "b.toml": SUPPORT})
    with pytest.raises(AgentDefinitionError, match=r"also defined by .*a\.toml"):
        build_catalog(_settings(dir=folder, entry_points=False))


def test_an_unknown_default_agent_is_refused() -> None:
    with pytest.raises(AgentDefinitionError, match=r"AGENTSTREAM_AGENTS__DEFAULT"):
        build_catalog(_settings(default="nobody", entry_points=False))


@pytest.fixture
def agents_module(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "my_agents.py").write_text(
        textwrap.dedent(
            """\
            from agentstream.agents import Agent

            triage = Agent(name="triage", instructions="Route the question.", tools=["agent.*"])
            billing = Agent(name="billing", instructions_file="billing.txt")
            """
        )
    )
    (tmp_path / "billing.txt").write_text("You handle invoices.")
    sys.path.insert(0, str(tmp_path))
    yield "my_agents"
    sys.path.remove(str(tmp_path))
    sys.modules.pop("my_agents", None)


def test_python_agents_are_found_by_module_path(agents_module: str) -> None:
    catalog = build_catalog(_settings(modules=[agents_module], entry_points=False))
    assert catalog.names() == ["billing", "default", "triage"]
    assert catalog.get("billing").instructions == "You handle invoices."  # next to the module
    one = build_catalog(_settings(modules=[f"{agents_module}:triage"], entry_points=False))
    assert one.names() == ["default", "triage"]


def test_a_module_that_does_not_import_is_refused_naming_the_setting() -> None:
    with pytest.raises(AgentDefinitionError, match=r"no_such_module_x.*AGENTS__MODULES"):
        build_catalog(_settings(modules=["no_such_module_x"], entry_points=False))


# --- versions -----------------------------------------------------------------------------------


def test_the_version_is_a_hash_of_the_canonical_definition(tmp_path: Path) -> None:
    a = Agent(name="a", instructions="Be brief.", tools=("calculator",), temperature=0.5)
    same = Agent.model_validate(
        {"temperature": 0.5, "tools": ["calculator"], "instructions": "Be brief.", "name": "a"}
    )
    assert a.version == same.version
    assert len(a.version) == 12
    assert int(a.version, 16) >= 0
    assert Agent(name="a", instructions="Be briefer.").version != a.version
    assert a.model_copy(update={"temperature": 0.6}).version != a.version
    # instructions read from a file version by content, not by path
    folder = _folder(tmp_path, {"a.toml": 'instructions_file = "p.txt"\n', "p.txt": "Be brief."})
    from_file = build_catalog(_settings(dir=folder, entry_points=False)).get("a")
    assert from_file.version == Agent(name="a", instructions="Be brief.").version
    (folder / "p.txt").write_text("Be very brief.")
    changed = build_catalog(_settings(dir=folder, entry_points=False)).get("a")
    assert changed.version != from_file.version


# --- the stages serving agents (in memory) ------------------------------------------------------


async def test_each_request_is_served_by_the_agent_it_names() -> None:
    def model(request: LLMRequest) -> LLMResult:
        return LLMResult(content=f"tools: {sorted(t.name for t in request.tools)}")

    llm = FunctionModel(model)
    agents = [
        Agent(name="math", instructions="You do sums.", tools=("calculator",), temperature=0.1),
        Agent(name="plain", instructions="You chat.", max_output_tokens=99),
    ]
    async with TestPipeline(llm=llm, agents=agents) as pipeline:
        maths = await pipeline.ask("2+2?", agent="math", session_id="s1")
        plain = await pipeline.ask("hi", agent="plain", session_id="s2")
        default = await pipeline.ask("hi", session_id="s3")
    assert maths.content == "tools: ['calculator']"
    assert plain.content == "tools: []"
    assert "current_time" in default.content
    systems = [r.messages[0].content for r in llm.requests]
    assert systems == ["You do sums.", "You chat.", Settings().llm.system_prompt]
    assert [r.temperature for r in llm.requests] == [0.1, None, None]
    assert llm.requests[1].max_tokens == 99
    assert (maths.agent, maths.agent_version) == ("math", agents[0].version)
    assert default.agent == "default"
    metrics = {m.request_id: m for m in pipeline.metrics}
    assert metrics[maths.request_id].agent_version == agents[0].version


async def test_an_unknown_agent_is_answered_unknown_agent() -> None:
    async with TestPipeline() as pipeline:
        answer = await pipeline.ask("hi", agent="nobody")
    assert answer.state == "ERROR"
    assert answer.error_code == "UNKNOWN_AGENT"
    assert answer.agent is None
    assert [e.code for e in pipeline.errors] == ["UNKNOWN_AGENT"]


async def test_a_requested_tool_the_agent_does_not_offer_is_refused() -> None:
    agents = [Agent(name="plain", instructions="You chat.")]
    async with TestPipeline(agents=agents) as pipeline:
        answer = await pipeline.ask("hi", agent="plain", allowed_tools=["calculator"])
    assert answer.error_code == "UNKNOWN_TOOL"
    assert "does not offer" in answer.content


async def test_a_call_of_a_tool_the_agent_does_not_offer_is_denied() -> None:
    def model(request: LLMRequest) -> LLMResult:
        if not any(m.role == "tool" for m in request.messages):
            return tool_call("calculator", {"expression": "2+3"})  # not offered: denied
        return LLMResult(content=request.messages[-1].content)

    agents = [Agent(name="plain", instructions="You chat.", tools=("current_time",))]
    async with TestPipeline(llm=FunctionModel(model), agents=agents) as pipeline:
        answer = await pipeline.ask("add", agent="plain")
    assert answer.state == "COMPLETED"
    assert "tool access denied: calculator" in answer.content
    assert answer.tool_calls[0].error_code == "TOOL_ACCESS_DENIED"


async def test_an_agents_max_turns_bounds_its_requests() -> None:
    def model(request: LLMRequest) -> LLMResult:
        return tool_call("calculator", {"expression": "1+1"})  # never a final answer

    agents = [Agent(name="short", instructions="x", tools=("*",), max_turns=2)]
    async with TestPipeline(llm=FunctionModel(model), agents=agents) as pipeline:
        answer = await pipeline.ask("loop", agent="short")
    assert answer.error_code == "MAX_TURNS_EXCEEDED"
    assert "after 2 model turns" in answer.content


# --- structured output --------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"total": {"type": "integer"}},
    "required": ["total"],
    "additionalProperties": False,
}


def test_check_output_names_where_and_what_without_content_in_the_log_reason() -> None:
    assert check_output(SCHEMA, '{"total": 4}') is None
    bad = check_output(SCHEMA, '{"total": "four-secret"}')
    assert bad is not None
    assert "four-secret" in bad.reason  # the model is told what was wrong
    assert bad.log_reason == "at /total: type failed"  # the log is not
    assert check_output(SCHEMA, "not json") is not None


async def test_an_invalid_structured_answer_gets_one_repair_turn() -> None:
    answers = iter(['{"total": "four"}', '{"total": 4}'])

    def model(request: LLMRequest) -> LLMResult:
        return LLMResult(content=next(answers))

    llm = FunctionModel(model)
    agents = [Agent(name="calc", instructions="Sum it.", output_schema=SCHEMA)]
    async with TestPipeline(llm=llm, agents=agents) as pipeline:
        answer = await pipeline.ask("2+2 as JSON", agent="calc")
    assert answer.state == "COMPLETED"
    assert json.loads(answer.content) == {"total": 4}
    first, repair = llm.requests
    assert first.output_schema == SCHEMA  # asked natively of the provider
    assert repair.messages[-2].content == '{"total": "four"}'  # it sees what it answered
    assert "does not satisfy the required output JSON Schema" in repair.messages[-1].content


async def test_a_second_invalid_structured_answer_is_invalid_output() -> None:
    llm = FunctionModel(lambda request: LLMResult(content='{"total": 4, "extra": 1}'))
    agents = [Agent(name="calc", instructions="Sum it.", output_schema=SCHEMA)]
    async with TestPipeline(llm=llm, agents=agents) as pipeline:
        answer = await pipeline.ask("2+2 as JSON", agent="calc")
        follow = await pipeline.ask("again", agent="calc")  # the session was released
    assert answer.state == "ERROR"
    assert answer.error_code == "INVALID_OUTPUT"
    assert "output schema" in answer.content
    assert len(llm.requests) == 4  # two per request: the answer and one repair
    assert follow.error_code == "INVALID_OUTPUT"
    assert [e.code for e in pipeline.errors] == ["INVALID_OUTPUT", "INVALID_OUTPUT"]


def test_agents_are_found_through_the_entry_point_group(
    agents_module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.metadata import EntryPoint

    from agentstream.agents import loader

    points = [
        EntryPoint(name="acme", value=f"{agents_module}:triage", group=loader.ENTRY_POINT_GROUP),
        EntryPoint(name="bad", value="no_such_module_y:x", group=loader.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(loader, "entry_points", lambda group: points[:1])
    assert build_catalog(_settings()).names() == ["default", "triage"]
    monkeypatch.setattr(loader, "entry_points", lambda group: points)
    with pytest.raises(AgentDefinitionError, match=r"entry point bad .*cannot load"):
        build_catalog(_settings())
    assert build_catalog(_settings(entry_points=False)).names() == ["default"]


async def test_agents_named_as_tools_are_offered_to_the_model() -> None:
    def model(request: LLMRequest) -> LLMResult:
        return LLMResult(content=repr([(t.name, t.description) for t in request.tools]))

    agents = [
        Agent(name="billing", description="Invoices and refunds.", instructions="Bill."),
        Agent(name="triage", instructions="Route.", tools=("calculator", "agent.billing")),
        Agent(name="anything", instructions="Any.", tools=("*",)),
    ]
    async with TestPipeline(llm=FunctionModel(model), agents=agents) as pipeline:
        triage = await pipeline.ask("hi", agent="triage", session_id="s1")
        narrowed = await pipeline.ask(
            "hi", agent="triage", session_id="s2", allowed_tools=["calculator"]
        )
        anything = await pipeline.ask("hi", agent="anything", session_id="s3")
    offered = dict(ast.literal_eval(triage.content))
    assert offered.keys() == {"calculator", "agent.billing"}
    assert offered["agent.billing"] == "Invoices and refunds."
    assert [name for name, _ in ast.literal_eval(narrowed.content)] == ["calculator"]
    # a glob lets the model call an agent it knows of, but offers none
    assert not any(name.startswith("agent.") for name, _ in ast.literal_eval(anything.content))
