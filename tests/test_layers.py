"""No import runs upward: each module imports only its own layer or the layers below.

    cli, client, testing, embedded (the dev stack: brokers, Redis, topic creation), the root
    streams
    processors
    admission, llm, tools, agents (the agent catalog: definitions the stages serve)
    state, resilience, schemas, observability
    config, exceptions, settings_source  (and tools/settings.py: a settings model that depends
    on nothing)

Imports inside functions and under TYPE_CHECKING count too: they are dependencies all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import agentstream

ROOT = Path(agentstream.__file__).parent
LAYERS: list[set[str]] = [
    {"cli", "client", "client_stream", "cancel_client", "testing", "embedded", "", "__main__"},
    {"streams"},
    {"processors"},
    {"admission", "llm", "tools", "agents"},
    {"state", "resilience", "schemas", "observability"},
    {"config", "exceptions", "tools.settings", "settings_source"},
]


def _layer(module: str) -> int:
    """Layer index of a dotted module path below ``agentstream``."""
    parts = module.split(".")
    for candidate in (".".join(parts[:2]), parts[0]):
        for index, members in enumerate(LAYERS):
            if candidate in members:
                return index
    raise AssertionError(f"module {module!r} is in no layer: add it to LAYERS")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name == "agentstream" or name.startswith("agentstream."):
                found.append((node.lineno, name.removeprefix("agentstream").lstrip(".")))
    return found


def test_no_import_runs_upward() -> None:
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        module = ".".join(p for p in rel.parts if p != "__init__")
        own = _layer(module)
        for line, target in _imports(path):
            if target and _layer(target) < own:
                upward.append(f"{rel}.py:{line} imports agentstream.{target}")
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_the_public_api_is_what_all_says_and_loads_lazily() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, agentstream; heavy = 'agentstream.client' in sys.modules; "
        "missing = [n for n in agentstream.__all__ if not hasattr(agentstream, n)]; "
        "print(heavy, missing)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False []"
