"""An MCP server's tool as a registry :class:`~agentstream.tools.base.Tool`.

The model sees the result as text: the text blocks joined by newlines, other blocks as short
placeholders (``[image: image/png]``), or the structured content as JSON when there is no block.
An ``is_error`` result raises :class:`ToolExecutionError` carrying the server's text, which the
registry turns into an error outcome for the model.
"""

from __future__ import annotations

import json
from typing import Any

from mcp_types import (
    AudioContent,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

from agentstream.llm.base import ToolSpec
from agentstream.tools.base import IDEMPOTENCY_META_KEY, ToolPolicy
from agentstream.tools.exceptions import ToolExecutionError
from agentstream.tools.mcp.connection import McpConnection


class McpTool:
    """``server.tool`` on an :class:`McpConnection`."""

    def __init__(
        self,
        *,
        connection: McpConnection,
        remote_name: str,
        spec: ToolSpec,
        policy: ToolPolicy,
    ) -> None:
        self.connection = connection
        self.remote_name = remote_name
        self._spec = spec
        self.policy = policy

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    @property
    def server(self) -> str:
        return self.connection.name

    @property
    def read_only(self) -> bool:
        return self.policy.read_only

    async def call(self, arguments: dict[str, Any]) -> str:
        return await self.call_with_key(arguments, None)

    async def call_with_key(self, arguments: dict[str, Any], idempotency_key: str | None) -> str:
        meta = {IDEMPOTENCY_META_KEY: idempotency_key} if idempotency_key else None
        result = await self.connection.call(self.remote_name, arguments, meta=meta)
        text = render_result(result)
        if result.is_error:
            raise ToolExecutionError(
                f"tool {self._spec.name!r} failed: {text or 'the server reported an error'}"
            )
        return text


def render_result(result: CallToolResult) -> str:
    parts = [_render_block(block) for block in result.content]
    text = "\n".join(p for p in parts if p)
    if not text and result.structured_content is not None:
        text = json.dumps(result.structured_content, ensure_ascii=False, sort_keys=True)
    return text


def _render_block(block: Any) -> str:
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, ImageContent | AudioContent):
        return f"[{block.type}: {block.mime_type}]"
    if isinstance(block, ResourceLink):
        return f"[resource: {block.uri}]"
    if isinstance(block, EmbeddedResource):
        resource = block.resource
        if isinstance(resource, TextResourceContents):
            return resource.text
        return f"[resource: {resource.uri}]"
    return f"[{getattr(block, 'type', 'content')}]"
