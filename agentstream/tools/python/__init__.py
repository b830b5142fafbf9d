"""Python functions as tools: ``@agentstream.tool`` and where workers find them.

- :mod:`.function`  ``tool`` (the decorator) and ``PythonTool``: schema from type hints and the
  docstring, validation, sync functions off the event loop, the idempotency key
- :mod:`.loader`    tools from ``tools.python_modules`` and the ``agentstream.tools`` entry points
"""

from agentstream.tools.python.function import PythonTool, tool

__all__ = ["PythonTool", "tool"]
