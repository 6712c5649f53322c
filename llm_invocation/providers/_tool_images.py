"""The words that carry images returned by tools where an API takes them only beside the
tool result (Chat Completions: in a user message after the tool messages; Gemini: beside the
``functionResponse`` parts): a label naming the call, and the text of a result that has
images and no text."""

from __future__ import annotations

from ..types import Message

__all__ = ["image_label", "tool_image_note"]


def image_label(message: Message) -> str:
    """The text that introduces the images of the tool result ``message``:
    ``Images returned by tool call <id> (<name>):``."""
    name = f" ({message.name})" if message.name else ""
    return f"Images returned by tool call {message.tool_call_id}{name}:"


def tool_image_note(count: int, where: str) -> str:
    """The text of a tool result that returned ``count`` images and no text, saying
    ``where`` they are (``"in the user message that follows"``)."""
    if count == 1:
        return f"The tool returned 1 image and no text: it is {where}."
    return f"The tool returned {count} images and no text: they are {where}."
