"""Tools: the ``ToolExecutor`` interface, the registry and built-in tools."""
