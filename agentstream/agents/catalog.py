"""The agents a deployment serves, by name, checked once at start-up.

:func:`build_catalog` loads the folder, the modules and the entry points of ``settings.agents``
and refuses (``AgentDefinitionError``: source, field, reason) a broken definition, two agents of
one name, a model route the deployment does not configure, and an ``agent.<name>`` tool naming no
agent. The built-in ``default`` agent is today's behaviour: ``llm.system_prompt``, every tool,
the deployment's limits; a definition named ``default`` replaces it. ``agents.default`` names the
agent of requests that name none.
"""

from __future__ import annotations

from collections.abc import Iterable

from agentstream.agents.definition import Agent
from agentstream.agents.exceptions import AgentDefinitionError, UnknownAgentError
from agentstream.agents.loader import checked, from_entry_points, from_folder, from_modules
from agentstream.config import Settings
from agentstream.settings_source import describe_setting

BUILTIN_DEFAULT = "default"
LOCAL_ROUTE = "local"


def default_agent(settings: Settings) -> Agent:
    """Today's single agent, from the settings."""
    return Agent(
        name=BUILTIN_DEFAULT,
        description="Today's behaviour: llm.system_prompt, every tool.",
        instructions=settings.llm.system_prompt,
        tools=("*",),
    )


class AgentCatalog:
    """Agents by name; ``default`` serves requests that name no agent."""

    def __init__(self, agents: Iterable[Agent], *, default: str = BUILTIN_DEFAULT) -> None:
        self._agents = {a.name: a for a in agents}
        if default not in self._agents:
            raise AgentDefinitionError(
                describe_setting(("agents", "default")),
                "",
                f"names no agent ({', '.join(self.names())})",
            )
        self.default = default

    def names(self) -> list[str]:
        return sorted(self._agents)

    def agents(self) -> list[Agent]:
        return [self._agents[n] for n in self.names()]

    def resolve(self, name: str | None) -> str:
        """The agent serving a request naming ``name`` (None: the default)."""
        return self.default if name is None else name

    def get(self, name: str | None) -> Agent:
        agent = self._agents.get(self.resolve(name))
        if agent is None:
            raise UnknownAgentError(f"unknown agent {name!r}")
        return agent

    def has(self, name: str | None) -> bool:
        return self.resolve(name) in self._agents

    @classmethod
    def of_settings(cls, settings: Settings) -> AgentCatalog:
        """Only the built-in default agent (no definitions loaded): tests, in-memory tools."""
        return cls([default_agent(settings)])


def build_catalog(settings: Settings, *, extra: Iterable[Agent] = ()) -> AgentCatalog:
    """Every configured definition, checked against the deployment (see the module docstring);
    ``extra`` agents are given in code (``TestPipeline(agents=...)``)."""
    config = settings.agents
    found = [(f"agent {a.name!r} (in code)", a) for a in extra]
    found = [(source, checked(source, a)) for source, a in found]
    if config.dir is not None:
        found.extend(from_folder(config.dir))
    found.extend(from_modules(config.modules))
    if config.entry_points:
        found.extend(from_entry_points())
    seen: dict[str, str] = {}
    for source, agent in found:
        if agent.name in seen:
            raise AgentDefinitionError(
                source, "name", f"agent {agent.name!r} is also defined by {seen[agent.name]}"
            )
        seen[agent.name] = source
    agents = {a.name: a for _, a in found}
    agents.setdefault(BUILTIN_DEFAULT, default_agent(settings))
    routes = known_routes(settings)
    for source, agent in found:
        _check_against(source, agent, routes, agents)
    return AgentCatalog(agents.values(), default=config.default)


def known_routes(settings: Settings) -> set[str]:
    llm = settings.llm
    return {*llm.routes, *llm.providers, LOCAL_ROUTE}


def _check_against(source: str, agent: Agent, routes: set[str], agents: dict[str, Agent]) -> None:
    if agent.model is not None and agent.model not in routes:
        raise AgentDefinitionError(
            source,
            "model",
            f"{agent.model!r} names no route or provider ({', '.join(sorted(routes))}); "
            "add it to llm.routes / llm.providers or fix the definition",
        )
    missing = [n for n in agent.delegates_to() if n not in agents]
    if missing:
        raise AgentDefinitionError(
            source, "tools", f"agent.{missing[0]} names no agent in the catalog"
        )
