"""Tools from MCP servers (official ``mcp`` SDK 2.x): config, sessions, registry integration.

- :mod:`.config`      ``mcpServers`` JSON -> :class:`McpServerConfig`
- :mod:`.connection`  one long-lived session per server per worker, reconnect with backoff
- :mod:`.tool`        an MCP tool as a registry tool; result rendering
- :mod:`.toolset`     the servers' tools in the registry (namespacing and the duplicate rule)
"""
