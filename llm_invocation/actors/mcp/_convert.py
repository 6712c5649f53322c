"""The SDK's types into ours: tools, content blocks, call results, resources and prompts.

Imports ``mcp_types`` (loaded with the SDK, lazily). Every function here is pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

import mcp_types
import msgspec

from ...errors import InvalidRequest
from ...tools._core import ToolResult
from ...types import (
    AudioPart,
    ContentAnnotations,
    ContentBlock,
    ImagePart,
    Message,
    Part,
    ResourceLinkPart,
    ResourcePart,
    TextPart,
)
from ._content import resource_message_part
from ._models import (
    MCPPrompt,
    MCPPromptArgument,
    MCPPromptResult,
    MCPResource,
    MCPResourceTemplate,
    MCPToolAnnotations,
    TaskSupport,
)

__all__ = [
    "RemoteTool",
    "call_result",
    "content_annotations",
    "content_block",
    "prompt",
    "prompt_result",
    "remote_tool",
    "resource",
    "resource_contents",
    "resource_template",
]

_JSON: Final = msgspec.json.Encoder()


class RemoteTool(msgspec.Struct, frozen=True, kw_only=True):
    """One tool as the server lists it."""

    name: str
    description: str
    parameters: dict[str, Any]
    title: str | None = None
    annotations: MCPToolAnnotations | None = None
    output_schema: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    task_support: TaskSupport | None = None


def remote_tool(tool: mcp_types.Tool) -> RemoteTool:
    hints = tool.annotations
    title = tool.title or (hints.title if hints is not None else None)
    return RemoteTool(
        name=tool.name,
        description=tool.description or "",
        parameters=tool.input_schema,
        title=title,
        annotations=None
        if hints is None
        else MCPToolAnnotations(
            title=hints.title,
            read_only=hints.read_only_hint,
            destructive=hints.destructive_hint,
            idempotent=hints.idempotent_hint,
            open_world=hints.open_world_hint,
        ),
        output_schema=tool.output_schema,
        meta=tool.meta,
        task_support=tool.execution.task_support if tool.execution is not None else None,
    )


def content_annotations(raw: mcp_types.Annotations | None) -> ContentAnnotations | None:
    if raw is None:
        return None
    return ContentAnnotations(
        audience=list(raw.audience) if raw.audience is not None else None,
        priority=raw.priority,
        last_modified=raw.last_modified,
    )


def resource_contents(
    raw: mcp_types.TextResourceContents | mcp_types.BlobResourceContents,
) -> ResourcePart:
    if isinstance(raw, mcp_types.TextResourceContents):
        return ResourcePart(uri=raw.uri, media_type=raw.mime_type, text=raw.text, meta=raw.meta)
    return ResourcePart(uri=raw.uri, media_type=raw.mime_type, blob=raw.blob, meta=raw.meta)


def content_block(raw: mcp_types.ContentBlock) -> ContentBlock:
    """One content block of a result or a prompt, typed, with its annotations and ``_meta``.

    Raises:
        InvalidRequest: an image's data is not usable (no MIME type).
    """
    part: TextPart | ImagePart | AudioPart | ResourcePart | ResourceLinkPart
    match raw:
        case mcp_types.TextContent():
            part = TextPart(text=raw.text)
        case mcp_types.ImageContent():
            part = ImagePart(data=raw.data, media_type=raw.mime_type)
        case mcp_types.AudioContent():
            part = AudioPart(data=raw.data, media_type=raw.mime_type)
        case mcp_types.EmbeddedResource():
            part = resource_contents(raw.resource)
        case mcp_types.ResourceLink():
            part = ResourceLinkPart(
                uri=raw.uri,
                name=raw.name,
                title=raw.title,
                description=raw.description,
                media_type=raw.mime_type,
                size=raw.size,
            )
    return ContentBlock(part=part, annotations=content_annotations(raw.annotations), meta=raw.meta)


def _describe(part: AudioPart | ResourcePart | ResourceLinkPart) -> str:
    """What the model reads of content it cannot receive (the block itself is kept)."""
    match part:
        case AudioPart():
            return f"[audio ({part.media_type}, {_size(part.data)} bytes)]"
        case ResourcePart():
            kind = part.media_type or "binary data"
            return f"[resource {part.uri} ({kind}, {_size(part.blob or '')} bytes)]"
        case ResourceLinkPart():
            return f"[resource link {part.name}: {part.uri}]"


def _size(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=True))
    except binascii.Error:
        return len(data) * 3 // 4


def call_result(
    raw: mcp_types.CallToolResult, *, name: str, call_id: str, duration: float
) -> ToolResult:
    """A `ToolResult` from the server's result.

    Every block is kept, typed, in ``blocks``; the model reads the text (embedded text
    resources included, a short description of audio, binary resources and resource links)
    and gets the images (image resources included).

    Raises:
        InvalidRequest: a block is not usable (an image without a MIME type).
    """
    texts: list[str] = []
    images: list[ImagePart] = []
    blocks = [content_block(block) for block in raw.content]
    for block in blocks:
        part = block.part
        match part:
            case TextPart():
                texts.append(part.text)
            case ImagePart():
                images.append(part)
            case ResourcePart() if part.text is not None:
                texts.append(part.text)
            case ResourcePart() if (image := part.as_image()) is not None:
                images.append(image)
            case AudioPart() | ResourcePart() | ResourceLinkPart():
                texts.append(_describe(part))
    data = raw.structured_content
    content = "\n".join(texts)
    if not content and data is not None:
        content = _JSON.encode(data).decode()
    if raw.is_error:
        return ToolResult(
            call_id=call_id,
            name=name,
            content=content or "the tool reported an error",
            is_error=True,
            error_code="tool_execution_failed",
            data=data,
            images=images,
            duration=duration,
            blocks=blocks,
        )
    return ToolResult(
        call_id=call_id,
        name=name,
        content=content,
        data=data,
        images=images,
        duration=duration,
        blocks=blocks,
    )


def resource(raw: mcp_types.Resource) -> MCPResource:
    return MCPResource(
        uri=raw.uri,
        name=raw.name,
        title=raw.title,
        description=raw.description,
        media_type=raw.mime_type,
        size=raw.size,
        annotations=content_annotations(raw.annotations),
        meta=raw.meta,
    )


def resource_template(raw: mcp_types.ResourceTemplate) -> MCPResourceTemplate:
    return MCPResourceTemplate(
        uri_template=raw.uri_template,
        name=raw.name,
        title=raw.title,
        description=raw.description,
        media_type=raw.mime_type,
        annotations=content_annotations(raw.annotations),
        meta=raw.meta,
    )


def prompt(raw: mcp_types.Prompt) -> MCPPrompt:
    return MCPPrompt(
        name=raw.name,
        title=raw.title,
        description=raw.description,
        arguments=[
            MCPPromptArgument(
                name=arg.name,
                title=arg.title,
                description=arg.description,
                required=bool(arg.required),
            )
            for arg in raw.arguments or []
        ],
        meta=raw.meta,
    )


def message_part(block: ContentBlock, *, where: str) -> Part:
    """``block`` as a message part: text, an image, an embedded resource's text or image.

    An embedded resource is carried as `resource_message_part` carries it (its text headed
    by its URI; a textual blob decoded as UTF-8). A resource link becomes a text line with
    its URI (read it to include its contents).

    Raises:
        InvalidRequest: the block is audio or a binary resource that is not an image or
            UTF-8 text: a message cannot carry it (``details["reason"] ==
            "unsupported_content"``).
    """
    part = block.part
    match part:
        case TextPart() | ImagePart():
            return part
        case ResourcePart() if (carried := resource_message_part(part)) is not None:
            return carried
        case ResourceLinkPart():
            return TextPart(text=_describe(part))
        case AudioPart() | ResourcePart():
            raise InvalidRequest(
                f"{where} contains {_describe(part)}, which a message cannot carry",
                details={"reason": "unsupported_content", "type": type(part).__name__},
            )


def prompt_result(raw: mcp_types.GetPromptResult, *, name: str) -> MCPPromptResult:
    """The prompt's messages as ours, one `Message` per prompt message, in order.

    Raises:
        InvalidRequest: a message holds content a message cannot carry (see `message_part`).
    """
    messages: list[Message] = []
    for item in raw.messages:
        part = message_part(content_block(item.content), where=f"prompt {name!r}")
        content: str | list[Part] = part.text if isinstance(part, TextPart) else [part]
        messages.append(Message(role=item.role, content=content))
    return MCPPromptResult(messages=messages, description=raw.description)
