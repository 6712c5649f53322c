"""A resource's contents as a message part: what prompts and `resource_message` share.

Text is headed by the resource's URI (``[uri]`` on a line of its own), so the model knows
where it comes from; a blob of a textual MIME type (``text/*``, JSON, XML) is decoded as
UTF-8 and treated as text; an ``image/*`` blob is an image. Anything else is binary data a
message cannot carry. No ``mcp`` import: the handle uses this too.
"""

from __future__ import annotations

from typing import Final

from ...errors import InvalidRequest
from ...types import ImagePart, ResourcePart, TextPart

__all__ = ["is_textual", "resource_message_part"]

# Media types outside text/* whose bytes are text.
_TEXTUAL: Final = frozenset({"application/json", "application/xml"})
_TEXTUAL_SUFFIXES: Final = ("+json", "+xml")


def is_textual(media_type: str | None) -> bool:
    """Whether bytes of ``media_type`` are text: ``text/*``, JSON or XML (parameters such
    as ``charset`` aside)."""
    if not media_type:
        return False
    essence = media_type.split(";", 1)[0].strip().lower()
    return essence.startswith("text/") or essence in _TEXTUAL or essence.endswith(_TEXTUAL_SUFFIXES)


def resource_message_part(part: ResourcePart) -> TextPart | ImagePart | None:
    """``part`` as a message part: its text headed by ``[uri]``, or an image.

    Returns:
        None when the resource is binary data that is not an image, or a textual blob
        that is not valid base64 or UTF-8: a message cannot carry it (the caller says so).
    """
    text = part.text
    if text is None:
        image = part.as_image()
        if image is not None:
            return image
        if not is_textual(part.media_type):
            return None
        try:
            text = part.to_bytes().decode("utf-8")
        except (InvalidRequest, UnicodeDecodeError):
            return None
    return TextPart(text=f"[{part.uri}]\n{text}")
