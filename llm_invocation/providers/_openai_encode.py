"""The ``messages`` of an OpenAI Chat Completions body, from a conversation (WIRE-FORMATS 1).

* a user message's parts are ``text`` and ``image_url`` parts (an inline image as a
  ``data:`` URL); plain text stays a string;
* system, developer and assistant messages carry text only (an image there is refused):
  `ReasoningPart` content is not sent (OpenAI keeps reasoning server-side) except through a
  compatible server's ``reasoning_field`` on assistant messages;
* images returned by tools: Chat Completions takes images only in user messages, so a tool
  message carries its result's text, and one user message after the run of tool messages
  that answer one assistant turn (they must follow it directly) carries their images, in
  order, each result's images under a label naming the call: ``Images returned by tool call
  <id> (<name>):``. A result with images and no text says so in its tool message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InvalidRequest
from ..types import ImagePart, Message, Part, ReasoningPart, TextPart, ToolCall
from ._tool_images import image_label, tool_image_note

__all__ = [
    "chat_messages",
    "image_url_part",
    "refuse_image",
    "text_of",
    "user_parts",
]

Wire = dict[str, Any]


def refuse_image(role: str, *, provider: str | None = None) -> InvalidRequest:
    """The error for an image in a message where Chat Completions takes none."""
    return InvalidRequest(
        f"OpenAI Chat Completions takes images only in user messages and tool results, "
        f"not in {role} messages",
        provider=provider,
        details={"field": "messages", "role": role},
    )


def text_of(parts: Sequence[Part], role: str) -> str:
    """The text of non-user content; images there are refused, reasoning is left out.

    Raises:
        InvalidRequest: a part is an image.
    """
    texts: list[str] = []
    for part in parts:
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ImagePart):
            raise refuse_image(role)
    return "".join(texts)


def image_url_part(part: ImagePart) -> Wire:
    """An ``image_url`` content part: the URL, or a ``data:`` URL for inline data."""
    image: Wire = {"url": part.as_url()}
    if part.detail is not None:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def user_parts(parts: Sequence[Part]) -> list[Wire]:
    """A user message's content parts (reasoning is left out)."""
    out: list[Wire] = []
    for part in parts:
        if isinstance(part, TextPart):
            out.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            out.append(image_url_part(part))
    return out


def _tool_call(call: ToolCall) -> Wire:
    out: Wire = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }
    metadata = call.metadata
    if metadata is not None and "extra_content" in metadata:
        out["extra_content"] = metadata["extra_content"]
    return out


def _tool_message(message: Message, images: list[ImagePart]) -> Wire:
    """The tool message of a result; its images go to ``images``."""
    content = message.content
    if content is None or isinstance(content, str):
        text = content or ""
    else:
        text = "".join([p.text for p in content if isinstance(p, TextPart)])
        found = [p for p in content if isinstance(p, ImagePart)]
        if found:
            images.extend(found)
            if not text:
                text = tool_image_note(len(found), "in the user message that follows")
    return {"role": "tool", "tool_call_id": message.tool_call_id, "content": text}


def _message(message: Message, reasoning_field: str | None) -> Wire:
    role = message.role
    content = message.content
    out: Wire = {"role": role}
    if role == "user":
        out["content"] = user_parts(content) if isinstance(content, list) else content or ""
    else:
        text = content if isinstance(content, str) else text_of(content or [], role)
        if role == "assistant":
            calls = message.tool_calls
            if calls:
                out["content"] = text or None
                out["tool_calls"] = [_tool_call(call) for call in calls]
            else:
                out["content"] = text
            if reasoning_field is not None and isinstance(content, list):
                reasoning = [p.text for p in content if isinstance(p, ReasoningPart)]
                if reasoning:
                    out[reasoning_field] = "".join(reasoning)
        else:
            out["content"] = text
    if message.name is not None:
        out["name"] = message.name
    return out


def _with_extra_content(out: Wire, message: Message) -> Wire:
    metadata = message.metadata
    if metadata is not None and "extra_content" in metadata:
        out["extra_content"] = metadata["extra_content"]
    return out


def chat_messages(messages: Sequence[Message], *, reasoning_field: str | None = None) -> list[Wire]:
    """The ``messages`` array for ``messages``.

    Args:
        messages: the conversation.
        reasoning_field: the assistant-message field that carries `ReasoningPart` text back
            (a compatible server's quirk); None leaves reasoning out.

    Raises:
        InvalidRequest: an image in a system, developer or assistant message.
    """
    out: list[Wire] = []
    shown: list[Wire] = []  # the images of the current run of tool messages, labelled
    for message in messages:
        if message.role != "tool":
            if shown:
                out.append({"role": "user", "content": shown})
                shown = []
            out.append(_with_extra_content(_message(message, reasoning_field), message))
            continue
        images: list[ImagePart] = []
        out.append(_with_extra_content(_tool_message(message, images), message))
        if images:
            shown.append({"type": "text", "text": image_label(message)})
            shown.extend(image_url_part(image) for image in images)
    if shown:
        out.append({"role": "user", "content": shown})
    return out
