"""What an MCP server describes, in our types: tool hints, resources, templates, prompts.

These are plain frozen structs (no ``mcp`` import): `MCPTool` carries `MCPToolAnnotations`;
a server's handle (`llm_invocation.actors.mcp.MCPServerHandle`) answers with the rest.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypeAlias, final

import msgspec

from ...types import ContentAnnotations, Message

__all__ = [
    "MCPCompletion",
    "MCPEvent",
    "MCPPrompt",
    "MCPPromptArgument",
    "MCPPromptResult",
    "MCPResource",
    "MCPResourceTemplate",
    "MCPToolAnnotations",
    "PromptsChanged",
    "ResourceUpdated",
    "ResourcesChanged",
    "TOOL_METADATA",
    "TaskSupport",
    "same_tool",
    "tool_metadata",
]

TaskSupport: TypeAlias = Literal["forbidden", "optional", "required"]
"""Whether a tool runs as an MCP task (``execution.taskSupport``): absent is forbidden."""


@final
class MCPToolAnnotations(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A server's hints about one of its tools (untrusted: hints, not guarantees).

    Attributes:
        title: a human-readable title.
        read_only: the tool does not change its environment (``readOnlyHint``; default False).
        destructive: it may destroy data (``destructiveHint``; default True).
        idempotent: calling it again with the same arguments changes nothing more
            (``idempotentHint``; default False).
        open_world: it reaches an open world of outside entities (``openWorldHint``;
            default True).

    None means the server did not say (the defaults above apply).
    """

    title: str | None = None
    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None
    open_world: bool | None = None


@final
class MCPResource(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A resource a server lists.

    Attributes:
        uri: its URI (read it with ``read_resource``).
        name: its name.
        title: a human-readable title, if given.
        description: what it is, if given.
        media_type: its MIME type, if known.
        size: its size in bytes, if known.
        annotations: the server's hints, if any.
        meta: the server's ``_meta``, if any.
    """

    uri: str
    name: str
    title: str | None = None
    description: str | None = None
    media_type: str | None = None
    size: int | None = None
    annotations: ContentAnnotations | None = None
    meta: dict[str, Any] | None = None


@final
class MCPResourceTemplate(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A family of resources a server can read, by an RFC 6570 URI template.

    Attributes:
        uri_template: the template, like ``file:///{path}``.
        name: its name.
        title, description, media_type, annotations, meta: as for `MCPResource`.
    """

    uri_template: str
    name: str
    title: str | None = None
    description: str | None = None
    media_type: str | None = None
    annotations: ContentAnnotations | None = None
    meta: dict[str, Any] | None = None


@final
class MCPPromptArgument(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One argument of a prompt template."""

    name: str
    title: str | None = None
    description: str | None = None
    required: bool = False


@final
class MCPPrompt(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A prompt template a server lists (get it with ``get_prompt``)."""

    name: str
    title: str | None = None
    description: str | None = None
    arguments: list[MCPPromptArgument] = []
    meta: dict[str, Any] | None = None


@final
class MCPPromptResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A prompt, filled in: its messages are ready for a `Request`.

    Attributes:
        messages: the prompt's messages, in order (``user`` and ``assistant``).
        description: the server's description of the result, if any.
    """

    messages: list[Message]
    description: str | None = None


@final
class MCPCompletion(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Suggested values for an argument (``completion/complete``).

    Attributes:
        values: the suggestions (at most 100).
        total: how many there are in all, if the server said.
        has_more: the server has more than it sent.
    """

    values: list[str]
    total: int | None = None
    has_more: bool = False


@final
class ResourceUpdated(msgspec.Struct, frozen=True, kw_only=True):
    """A subscribed resource changed (``notifications/resources/updated``): read it again."""

    server: str
    uri: str


@final
class ResourcesChanged(msgspec.Struct, frozen=True, kw_only=True):
    """The server's list of resources changed (``notifications/resources/list_changed``)."""

    server: str


@final
class PromptsChanged(msgspec.Struct, frozen=True, kw_only=True):
    """The server's list of prompts changed (``notifications/prompts/list_changed``)."""

    server: str


MCPEvent: TypeAlias = ResourceUpdated | ResourcesChanged | PromptsChanged
"""What a server's notification callbacks receive."""


TOOL_METADATA: Final = ("title", "annotations", "output_schema", "meta", "task_support")
"""The attributes of an `MCPTool` taken as they are from the server's listing."""


def tool_metadata(spec: object) -> dict[str, Any]:
    """The `TOOL_METADATA` attributes of ``spec`` (a listed tool), by name."""
    return {name: getattr(spec, name) for name in TOOL_METADATA}


def same_tool(tool: object, spec: object) -> bool:
    """Whether a registered tool is what ``spec`` describes (nothing to re-register)."""
    names = ("description", "parameters", *TOOL_METADATA)
    return all(getattr(tool, name) == getattr(spec, name) for name in names)
