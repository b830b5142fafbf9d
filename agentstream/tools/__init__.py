"""Tools: the ``ToolExecutor`` interface, the registry, built-in, Python and MCP servers' tools.

- :mod:`.base`         ``Tool``, ``ToolExecutor``, ``ToolPolicy``, ``CallContext``, ``ToolOutcome``
- :mod:`.registry`     tools by name: schema validation, timeouts, policies, breaker scopes
- :mod:`.python`       ``@agentstream.tool`` functions; ``tools.python_modules``, entry points
- :mod:`.mcp`          MCP servers (``mcpServers`` config, sessions, reconnects, namespacing)
- :mod:`.executor`     ``PolicyExecutor``: permissions, result cache, metrics, MCP lifecycle
- :mod:`.permissions`  allow/deny globs for everyone, tenants and users
- :mod:`.policy`       policies from MCP annotations; operator overrides
- :mod:`.cache`        the Redis result cache for read-only tools configured cacheable (opt-in)
- :mod:`.health`       server health and per-tool metrics
- :mod:`.settings`     the ``tools`` settings group
- :mod:`.factory`      ``build_tools(settings, redis=...)``: what a worker runs
"""
