"""Content that tools and MCP servers return beyond text and images: typed and annotated.

A `ContentBlock` is one piece of a tool's result or of a resource, as the server sent it:
its part (`TextPart`, `ImagePart`, `AudioPart`, an embedded `ResourcePart` or a
`ResourceLinkPart`), the server's `ContentAnnotations` and its ``_meta``. These are kept
alongside what the model reads, so nothing a server sends is lost; they are not message
parts (`Part`), which are what providers accept.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeAlias, final

import msgspec

from ..errors import InvalidRequest
from ._messages import ImagePart, TextPart

__all__ = [
    "AudioPart",
    "ContentAnnotations",
    "ContentBlock",
    "ContentPart",
    "ResourceLinkPart",
    "ResourcePart",
]


@final
class ContentAnnotations(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A server's hints about a piece of content.

    Attributes:
        audience: who it is for: ``"user"``, ``"assistant"`` or both.
        priority: how important it is, from 0 (optional) to 1 (required).
        last_modified: when it last changed (ISO 8601), if known.
    """

    audience: list[str] | None = None
    priority: float | None = None
    last_modified: str | None = None


@final
class AudioPart(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type", tag="audio"
):
    """Audio, inline as base64 text.

    Attributes:
        data: the base64-encoded audio.
        media_type: its MIME type, like ``audio/wav``.
    """

    data: str
    media_type: str

    def to_bytes(self) -> bytes:
        """The raw audio.

        Raises:
            InvalidRequest: ``data`` is not valid base64.
        """
        return _decode(self.data, "audio")


@final
class ResourcePart(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type", tag="resource"
):
    """The contents of a resource: text, or binary data as base64 (exactly one of them).

    What `read_resource` returns, and what a tool embeds in its result.

    Attributes:
        uri: the resource's URI.
        media_type: its MIME type, if known.
        text: the text of a text resource.
        blob: the base64-encoded bytes of a binary resource.
        meta: the server's ``_meta`` for these contents.

    Raises:
        InvalidRequest: both or neither of ``text`` and ``blob`` are set.
    """

    uri: str
    media_type: str | None = None
    text: str | None = None
    blob: str | None = None
    meta: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.blob is None):
            raise InvalidRequest(
                "a resource part needs exactly one of text and blob",
                details={"field": "text" if self.text is None else "blob"},
            )

    def to_bytes(self) -> bytes:
        """The raw contents: the blob decoded, or the text as UTF-8.

        Raises:
            InvalidRequest: ``blob`` is not valid base64.
        """
        if self.text is not None:
            return self.text.encode()
        assert self.blob is not None  # __post_init__ checks it
        return _decode(self.blob, "resource")

    def as_image(self) -> ImagePart | None:
        """This resource as an inline image, when it is a binary ``image/*`` resource."""
        media = self.media_type or ""
        if self.blob is None or not media.startswith("image/"):
            return None
        return ImagePart(data=self.blob, media_type=media)


@final
class ResourceLinkPart(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    omit_defaults=True,
    tag_field="type",
    tag="resource_link",
):
    """A link to a resource the server can read (read it with the server's ``read_resource``).

    Attributes:
        uri: the resource's URI.
        name: its name.
        title: a human-readable title, if given.
        description: what it is, if given.
        media_type: its MIME type, if known.
        size: its size in bytes, if known.
    """

    uri: str
    name: str
    title: str | None = None
    description: str | None = None
    media_type: str | None = None
    size: int | None = None


ContentPart: TypeAlias = TextPart | ImagePart | AudioPart | ResourcePart | ResourceLinkPart
"""What a `ContentBlock` holds."""


@final
class ContentBlock(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One piece of content as a server sent it: the part, its annotations and ``_meta``.

    Attributes:
        part: the content.
        annotations: the server's hints (audience, priority, last modified), if any.
        meta: the server's ``_meta`` for this block, if any.
    """

    part: ContentPart
    annotations: ContentAnnotations | None = None
    meta: dict[str, Any] | None = None


def _decode(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise InvalidRequest(
            f"{what} data is not valid base64: {exc}", details={"field": "data"}
        ) from exc
