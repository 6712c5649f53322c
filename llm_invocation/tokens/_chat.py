"""OpenAI's chat token-counting rule, tool definitions, response formats and image tokens
(re-exported by `llm_invocation.tokens._count`).

The message rule is the one of OpenAI's cookbook ("How to count tokens with tiktoken"): each
message costs 3 tokens plus its role and content, a ``name`` 1 more, and the reply is primed
with 3 (``<|im_start|>assistant<|im_sep|>``). Two calibrations come from recorded responses
(``/work/shared/conformance/openai``, see tests/test_conformance_tokens.py):

* reasoning-era models (``gpt-5*``, ``o1``/``o3``/``o4``) prime the reply with 2 tokens, not 3
  (gpt-5-mini on Chat Completions, gpt-5.5 on Responses: one token less than the cookbook);
* tool definitions are rendered as TypeScript, the community-measured format of
  hmarr/openai-chat-tokens (``namespace functions { // description  type name = (_: {...})
  => any; }``), plus 8 tokens, or 7 when the conversation has a system or developer message
  (whose content then counts with a trailing newline). cl100k models keep hmarr's constants
  (9, and 5 with a system message). This matched every recorded tool request exactly
  (gpt-4o, gpt-4o-mini, gpt-5.5).

Tool calls in assistant messages count as one message per call addressed to the function
(``assistant to=functions.NAME``, the arguments as content), plus 3 per calling message; a
tool result counts as a message from ``functions.NAME to=assistant``. Calibrated on the one
recorded follow-up (two parallel calls and their results: exact), so it is an estimate.
JSON-schema response formats count as ``# Response Formats / ## name`` and the compact
schema, plus 1: within 7 tokens (4 %) of the two recordings, over rather than under.

Images follow OpenAI's documented vision rules: tiles (a base plus a price per 512 px tile
after fitting into 2048 px and scaling the short side to 768 px; ``low`` detail is the base
only) or, for the patch-based small models, 32 px patches (at most 1536) times a multiplier.
The size is read from inline PNG, GIF, JPEG and WebP headers; otherwise a 1024x1024 image is
assumed (765 tokens on gpt-4o at high detail).
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, Final, cast, final

import msgspec

from ..types import (
    ImagePart,
    Message,
    NamedToolChoice,
    ResponseFormat,
    TextPart,
    ToolChoice,
    ToolSpec,
)
from ._encodings import count_with, encoding_name_for_model, model_name

__all__ = [
    "UNKNOWN_IMAGE_SIZE",
    "ChatRule",
    "PromptCount",
    "anthropic_image_tokens",
    "chat_rule",
    "count_chat",
    "count_messages",
    "gemini_image_tokens",
    "image_size",
    "openai_image_tokens",
    "render_tools",
]

UNKNOWN_IMAGE_SIZE: Final = (1024, 1024)
"""The size assumed for an image whose size cannot be read (a URL, an unknown format)."""

_JSON: Final = msgspec.json.Encoder()


@final
class ChatRule(msgspec.Struct, frozen=True, kw_only=True):
    """The constants of a model's chat format.

    Attributes:
        encoding: the tiktoken encoding.
        per_message: tokens around every message.
        per_name: tokens for a message's ``name`` besides the name itself.
        reply_priming: tokens that start the reply.
        tools: tokens around the tool definitions when there is no system message.
        tools_with_system: the same when a system or developer message exists.
    """

    encoding: str
    per_message: int = 3
    per_name: int = 1
    reply_priming: int = 3
    tools: int = 8
    tools_with_system: int = 7


@functools.lru_cache(maxsize=1024)  # asked on every count: models are few
def chat_rule(model: str) -> ChatRule:
    """Return the chat-format constants of ``model`` (see the module docstring)."""
    encoding = encoding_name_for_model(model)
    base = model_name(model) or ""
    if base.startswith("gpt-3.5-turbo-0301"):
        return ChatRule(encoding=encoding, per_message=4, per_name=-1, tools=9, tools_with_system=5)
    if encoding == "cl100k_base":
        return ChatRule(encoding=encoding, tools=9, tools_with_system=5)
    if base.startswith(("gpt-5", "o1", "o3", "o4")):
        return ChatRule(encoding=encoding, reply_priming=2)
    return ChatRule(encoding=encoding)


@final
class PromptCount(msgspec.Struct, frozen=True, kw_only=True):
    """A prompt's tokens split by where they come from.

    Attributes:
        text: tokens of text and structure, as the tokenizer counts them.
        images: tokens of images, from the provider's image rule.
        estimated: some part used an estimated rule (tools, tool calls, images, schemas).
    """

    text: int
    images: int = 0
    estimated: bool = False

    @property
    def total(self) -> int:
        """Text plus image tokens."""
        return self.text + self.images


# ---------------------------------------------------------------------------------------------
# Tool definitions, rendered as OpenAI renders them for the model (TypeScript)


def render_tools(tools: Sequence[ToolSpec]) -> str:
    """Render tool definitions the way OpenAI shows them to the model (a TypeScript namespace).

    This is the community-measured format (hmarr/openai-chat-tokens), extended to type unions,
    ``anyOf``, ``$ref`` and ``const``.
    """
    lines = ["namespace functions {", ""]
    for tool in tools:
        if tool.description:
            lines.append(f"// {tool.description}")
        params = tool.parameters
        if _properties(params):
            lines.append(f"type {tool.name} = (_: {{")
            lines.append(_format_properties(params, 0))
            lines.append("}) => any;")
        else:
            lines.append(f"type {tool.name} = () => any;")
        lines.append("")
    lines.append("} // namespace functions")
    return "\n".join(lines)


def _properties(schema: dict[str, Any]) -> dict[str, Any]:
    props = schema.get("properties")
    return cast("dict[str, Any]", props) if isinstance(props, dict) else {}


def _format_properties(schema: dict[str, Any], indent: int) -> str:
    required_raw = schema.get("required")
    required = cast("list[Any]", required_raw) if isinstance(required_raw, list) else []
    lines: list[str] = []
    for name, raw in _properties(schema).items():
        prop = cast("dict[str, Any]", raw) if isinstance(raw, dict) else {}
        description = prop.get("description")
        if description:
            lines.append(f"// {description}")
        optional = "" if name in required else "?"
        lines.append(f"{name}{optional}: {_format_type(prop, indent)},")
    pad = " " * indent
    return "\n".join(pad + line for line in lines)


def _literal(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else _JSON.encode(value).decode()


def _format_type(prop: dict[str, Any], indent: int) -> str:
    enum = prop.get("enum")
    if isinstance(enum, list):
        return " | ".join(_literal(v) for v in cast("list[object]", enum))
    if "const" in prop:
        return _literal(prop["const"])
    ref = prop.get("$ref")
    if isinstance(ref, str):
        return ref.rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        options = prop.get(key)
        if isinstance(options, list):
            items = [
                cast("dict[str, Any]", o)
                for o in cast("list[object]", options)
                if isinstance(o, dict)
            ]
            return " | ".join(_format_type(o, indent) for o in items)
    kind = prop.get("type")
    if isinstance(kind, str):
        kind = kind.lower()  # Gemini spells types in capitals
    elif isinstance(kind, list):
        return " | ".join(
            _format_type({**prop, "type": k}, indent) for k in cast("list[object]", kind)
        )
    if kind == "string":
        return "string"
    if kind in ("number", "integer"):
        return "number"
    if kind in ("boolean", "null"):
        return str(kind)
    if kind == "object":
        if not _properties(prop):
            return "object"
        return "\n".join(["{", _format_properties(prop, indent + 2), "}"])
    if kind == "array":
        items = prop.get("items")
        if isinstance(items, dict):
            return f"{_format_type(cast('dict[str, Any]', items), indent)}[]"
        return "any[]"
    return "any"


def _tool_choice_tokens(encoding: str, choice: ToolChoice | None) -> int:
    # hmarr's measurements for function_call: "none" 1, a named function 4 plus its name.
    # "required" was not measured; it is counted like "none".
    if choice is None or choice == "auto":
        return 0
    if isinstance(choice, NamedToolChoice):
        return 4 + count_with(encoding, choice.name)
    return 1


def _response_format_tokens(encoding: str, response_format: ResponseFormat | None) -> int:
    if response_format is None or response_format.json_schema is None:
        return 0
    name = response_format.name or "response"
    header = f"# Response Formats\n\n## {name}\n\n"
    schema = _JSON.encode(response_format.json_schema).decode()
    return count_with(encoding, header) + count_with(encoding, schema) + 1


# ---------------------------------------------------------------------------------------------
# Images


def _image_head(part: ImagePart, size: int) -> bytes:
    data = part.data
    if data is None:
        return b""
    chars = min(len(data), (size + 2) // 3 * 4)
    chars -= chars % 4
    try:
        return base64.b64decode(data[:chars])
    except (binascii.Error, ValueError):
        return b""


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 < len(head):
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height = int.from_bytes(head[pos + 5 : pos + 7], "big")
            width = int.from_bytes(head[pos + 7 : pos + 9], "big")
            return (width, height) if width and height else None
        pos += 2 + int.from_bytes(head[pos + 2 : pos + 4], "big")
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        return (
            int.from_bytes(head[24:27], "little") + 1,
            int.from_bytes(head[27:30], "little") + 1,
        )
    if chunk == b"VP8 " and len(head) >= 30:
        return (
            int.from_bytes(head[26:28], "little") & 0x3FFF,
            int.from_bytes(head[28:30], "little") & 0x3FFF,
        )
    if chunk == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    return None


def image_size(part: ImagePart) -> tuple[int, int] | None:
    """Return (width, height) of an inline PNG, GIF, JPEG or WebP image, or None.

    Only the start of the base64 data is decoded (up to 256 KiB for a JPEG's frame header).
    """
    head = _image_head(part, 32)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        return (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"))
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return (int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little"))
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_size(head)
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(_image_head(part, 256 * 1024))
    return None


# (base, per tile) of the tile-priced models, most specific prefix first; OpenAI's
# "Images and vision" guide. Unknown models are priced like gpt-4o.
_TILE_PRICES: Final[tuple[tuple[str, int, int], ...]] = (
    ("gpt-4o-mini", 2833, 5667),
    ("gpt-5-chat", 70, 140),
    ("gpt-5", 70, 140),
    ("o1", 75, 150),
    ("o3", 75, 150),
    ("computer-use", 65, 129),
)
_DEFAULT_TILE_PRICE: Final = (85, 170)
# Patch-priced models: 32 px patches, at most 1536, times a multiplier.
_PATCH_MULTIPLIERS: Final[tuple[tuple[str, float], ...]] = (
    ("gpt-5-mini", 1.62),
    ("gpt-5-nano", 2.46),
    ("gpt-4.1-mini", 1.62),
    ("gpt-4.1-nano", 2.46),
    ("o4-mini", 1.72),
)


def _patches(width: int, height: int) -> int:
    patches = math.ceil(width / 32) * math.ceil(height / 32)
    if patches <= 1536:
        return patches
    shrink = math.sqrt(32 * 32 * 1536 / (width * height))
    w, h = width * shrink, height * shrink
    shrink *= min(math.floor(w / 32) / (w / 32), math.floor(h / 32) / (h / 32))
    return min(1536, math.ceil(width * shrink / 32) * math.ceil(height * shrink / 32))


def _tiles(width: int, height: int) -> int:
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        scale = 2048 / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = w * scale, h * scale
    return math.ceil(w / 512) * math.ceil(h / 512)


def openai_image_tokens(part: ImagePart, model: str) -> int:
    """Tokens of an image for an OpenAI model, by OpenAI's documented vision rules.

    Tile-priced models: ``low`` detail costs the base (85 on gpt-4o); ``high`` and ``auto``
    cost the base plus a price per 512 px tile. Patch-priced models (gpt-4.1-mini, o4-mini,
    gpt-5-mini, ...) cost 32 px patches times a multiplier. When the size cannot be read,
    `UNKNOWN_IMAGE_SIZE` is assumed (765 tokens on gpt-4o at high detail).
    """
    base_model = model_name(model) or ""
    width, height = image_size(part) or UNKNOWN_IMAGE_SIZE
    for prefix, multiplier in _PATCH_MULTIPLIERS:
        if base_model.startswith(prefix):
            return math.ceil(_patches(width, height) * multiplier)
    base, tile = _DEFAULT_TILE_PRICE
    for prefix, b, t in _TILE_PRICES:
        if base_model.startswith(prefix):
            base, tile = b, t
            break
    if part.detail == "low":
        return base
    return base + tile * _tiles(width, height)


def anthropic_image_tokens(part: ImagePart) -> int:
    """Tokens of an image for Claude: width x height / 750 after fitting the long edge into
    1568 px (Anthropic's vision guide); 1600 (the cap) when the size is unknown."""
    size = image_size(part)
    if size is None:
        return 1600
    width, height = size
    if max(width, height) > 1568:
        scale = 1568 / max(width, height)
        width, height = int(width * scale), int(height * scale)
    return min(1600, math.ceil(width * height / 750))


def gemini_image_tokens(part: ImagePart) -> int:
    """Tokens of an image for Gemini: 258 up to 384x384, else 258 per 768x768 tile (Gemini's
    token guide); 1120 (the high media resolution of Gemini 3) when the size is unknown."""
    size = image_size(part)
    if size is None:
        return 1120
    width, height = size
    if width <= 384 and height <= 384:
        return 258
    return 258 * math.ceil(width / 768) * math.ceil(height / 768)


# ---------------------------------------------------------------------------------------------
# Messages

ImageRule = Callable[[ImagePart], int]


def _is_system(message: Message) -> bool:
    return message.role in ("system", "developer")


def count_chat(
    messages: Sequence[Message],
    *,
    model: str,
    tools: Sequence[ToolSpec] | None = None,
    tool_choice: ToolChoice | None = None,
    response_format: ResponseFormat | None = None,
    image_tokens: ImageRule | None = None,
) -> PromptCount:
    """Count a conversation by OpenAI's chat rule, keeping image tokens apart.

    ``image_tokens`` prices one image (OpenAI's rule for ``model`` by default), so other
    providers can reuse the text rule with their own image prices.

    Raises:
        ConfigurationError: when the tokenizer data is missing or fails its hash check.
    """
    rule = chat_rule(model)
    enc = rule.encoding
    text = rule.reply_priming
    images = 0
    estimated = False
    pad_system = bool(tools)
    if tools:
        estimated = True
        has_system = any(_is_system(m) for m in messages)
        text += count_with(enc, render_tools(tools))
        text += rule.tools_with_system if has_system else rule.tools
    if tool_choice is not None and tool_choice != "auto":
        estimated = True
        text += _tool_choice_tokens(enc, tool_choice)
    if response_format is not None and response_format.json_schema is not None:
        estimated = True
        text += _response_format_tokens(enc, response_format)
    call_names: dict[str, str] = {}
    for message in messages:
        content = message.content
        role = message.role
        if message.role == "tool":
            estimated = True
            name = call_names.get(message.tool_call_id or "") or message.name
            role = f"functions.{name} to=assistant" if name else "tool"
        if message.tool_calls:
            estimated = True
            text += 3
            for call in message.tool_calls:
                call_names[call.id] = call.name
                text += rule.per_message + count_with(enc, f"assistant to=functions.{call.name}")
                text += count_with(enc, call.arguments)
            if not content:
                continue  # the calls replace an empty assistant message
        text += rule.per_message + count_with(enc, role)
        if message.name and message.role != "tool":
            text += count_with(enc, message.name) + rule.per_name
        if pad_system and _is_system(message):
            # hmarr's measurement: with tools, the first system message gains a newline
            pad_system = False
            if isinstance(content, str):
                content += "\n"
        if isinstance(content, str):
            text += count_with(enc, content)
        elif content:
            for part in content:
                if isinstance(part, TextPart):
                    text += count_with(enc, part.text)
                elif isinstance(part, ImagePart):
                    estimated = True
                    images += (
                        image_tokens(part)
                        if image_tokens is not None
                        else openai_image_tokens(part, model=model)
                    )
                else:  # reasoning, counted though OpenAI may drop it: errs high
                    estimated = True
                    text += count_with(enc, part.text)
    return PromptCount(text=text, images=images, estimated=estimated)


def count_messages(
    messages: Sequence[Message],
    *,
    model: str = "gpt-4o",
    tools: Sequence[ToolSpec] | None = None,
    tool_choice: ToolChoice | None = None,
    response_format: ResponseFormat | None = None,
) -> int:
    """Count the prompt tokens of a chat request as OpenAI bills them.

    Messages follow OpenAI's published rule (cookbook "How to count tokens with tiktoken":
    3 tokens per message, 1 per name, 3 to prime the reply; 2 for ``gpt-5*`` and o-series
    models; 4 and -1 for ``gpt-3.5-turbo-0301``) and are exact for text.

    Tool definitions, tool choice, tool calls and results, JSON-schema response formats and
    images are **estimates**: tools are rendered in the community-measured TypeScript form
    (exact on every recorded request), images by OpenAI's documented tile or patch rule with
    a 1024x1024 image assumed when the size is unknown. See `llm_invocation.tokens._count`.

    Args:
        messages: the conversation.
        model: the model (a ``provider:`` prefix is accepted); unknown models count with
            ``o200k_base`` and gpt-4o's constants.
        tools: the tool definitions sent with the request.
        tool_choice: the request's tool choice.
        response_format: the request's response format.

    Raises:
        ConfigurationError: when the tokenizer data is missing or fails its hash check.
    """
    return count_chat(
        messages,
        model=model,
        tools=tools,
        tool_choice=tool_choice,
        response_format=response_format,
    ).total
