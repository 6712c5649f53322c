"""Building Anthropic Messages request bodies from a `Request` (WIRE-FORMATS 3.2).

* ``system`` and ``developer`` messages are lifted to the top-level ``system``: the string of
  a lone string message, text blocks otherwise;
* tool messages become ``tool_result`` blocks of a user message;
* consecutive messages of one role are merged into one message of several blocks (the API
  wants user and assistant to alternate), ``tool_result`` blocks first in a user message;
* an assistant message's signed reasoning is echoed first, as ``thinking`` (or
  ``redacted_thinking``) blocks, then its text, then its ``tool_use`` blocks. Reasoning
  without a signature, or made by another provider (`ReasoningPart.provider` names another
  entry), cannot be verified by Anthropic and is left out, text and all: the API takes
  thinking only with a valid signature, and another model's thoughts are not this model's
  words to put in a text block;
* a `CacheControl` marker becomes ``cache_control: {"type": "ephemeral"}`` (plus
  ``"ttl": "1h"`` for an hour) on its block: a part's on that part's block, a message's on
  its last block (a tool message's on its ``tool_result``), a tool's on its definition; a
  system prompt with a marker is sent as text blocks. A marker with no block to carry it
  (an empty text, a message ending in thinking) is refused, as are more than
  `CacheControl.MAX_PER_REQUEST` breakpoints and a ``"1h"`` one after a ``"5m"`` one;
* ``provider_options`` are merged last (one level deep for objects such as
  ``output_config``), except the codec's own keys ``betas`` / ``anthropic_beta`` (the
  ``anthropic-beta`` header) and ``disable_parallel_tool_use`` (put on ``tool_choice``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

from ..errors import InvalidRequest
from ..types import (
    CacheControl,
    ImagePart,
    Message,
    NamedToolChoice,
    Part,
    ReasoningPart,
    Request,
    TextPart,
    ToolChoice,
    ToolSpec,
)

__all__ = [
    "COUNT_TOKENS_KEYS",
    "UNSUPPORTED_OPTIONS",
    "build_body",
    "convert_messages",
    "pop_betas",
]

UNSUPPORTED_OPTIONS: Final = ("seed", "frequency_penalty", "presence_penalty")
"""`ModelOptions` fields the Messages API has no equivalent for."""

COUNT_TOKENS_KEYS: Final = frozenset(
    {
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "cache_control",
        "speed",
    }
)
"""The body fields ``/v1/messages/count_tokens`` accepts (the SDK's count-tokens params)."""

Block = dict[str, Any]


def _cache_control(marker: CacheControl) -> Block:
    if marker.ttl == "5m":
        return {"type": "ephemeral"}  # the API's default TTL, as the SDKs send it
    return {"type": "ephemeral", "ttl": marker.ttl}


def _text_block(text: str) -> Block:
    return {"type": "text", "text": text}


def _text_part_block(part: TextPart, index: int) -> Block | None:
    """The block of a text part; None for an empty one (which the API refuses), unless it
    carries a cache breakpoint, which would be lost: then `InvalidRequest`."""
    if not part.text:
        if part.cache_control is not None:
            raise InvalidRequest(
                f"message {index} has a cache breakpoint on an empty text part; Anthropic "
                "cannot cache at an empty block",
                details={"field": f"messages[{index}].content"},
            )
        return None
    block = _text_block(part.text)
    if part.cache_control is not None:
        block["cache_control"] = _cache_control(part.cache_control)
    return block


def _image_block(part: ImagePart) -> Block:
    if part.data is not None:
        source: Block = {"type": "base64", "media_type": part.media_type, "data": part.data}
    else:
        source = {"type": "url", "url": part.url}
    block: Block = {"type": "image", "source": source}
    if part.cache_control is not None:
        block["cache_control"] = _cache_control(part.cache_control)
    return block


def _mark_last(blocks: list[Block], message: Message, index: int) -> list[Block]:
    """Put ``message``'s cache breakpoint, if any, on the last of its ``blocks``."""
    marker = message.cache_control
    if marker is None:
        return blocks
    field = f"messages[{index}].cache_control"
    if not blocks or blocks[-1]["type"] in ("thinking", "redacted_thinking"):
        raise InvalidRequest(
            f"message {index} has a cache breakpoint but no block Anthropic can cache at "
            "(it ends in thinking, or has no content)",
            details={"field": field},
        )
    if "cache_control" in blocks[-1]:
        raise InvalidRequest(
            f"message {index} marks its last block as a cache breakpoint twice (on the "
            "message and on the part): keep one",
            details={"field": field},
        )
    blocks[-1]["cache_control"] = _cache_control(marker)
    return blocks


def _reasoning_block(part: ReasoningPart, provider: str | None) -> Block | None:
    if part.signature is None or not part.belongs_to(provider):
        return None  # unsigned, or signed by another provider: the API would reject it
    if part.redacted:
        return {"type": "redacted_thinking", "data": part.signature}
    return {"type": "thinking", "thinking": part.text, "signature": part.signature}


def _bad_part(part: Part, where: str, index: int) -> InvalidRequest:
    kind = "reasoning" if isinstance(part, ReasoningPart) else "image"
    return InvalidRequest(
        f"Anthropic does not accept {kind} content in {where} (message {index})",
        details={"field": f"messages[{index}].content", "part": kind},
    )


def _system_blocks(message: Message, index: int) -> list[Block]:
    content = message.content
    blocks: list[Block] = []
    if isinstance(content, str):
        if content:
            blocks.append(_text_block(content))
    elif content:
        for part in content:
            if not isinstance(part, TextPart):
                raise _bad_part(part, f"a {message.role} message", index)
            block = _text_part_block(part, index)
            if block is not None:
                blocks.append(block)
    return _mark_last(blocks, message, index)


def _user_content(message: Message, index: int) -> str | list[Block]:
    content = message.content
    if isinstance(content, str):
        if content:
            if message.cache_control is None:
                return content
            return _mark_last([_text_block(content)], message, index)
    elif content:
        blocks: list[Block] = []
        for part in content:
            if isinstance(part, TextPart):
                block = _text_part_block(part, index)
                if block is not None:
                    blocks.append(block)
            elif isinstance(part, ImagePart):
                blocks.append(_image_block(part))
            else:
                raise _bad_part(part, "a user message", index)
        if blocks:
            return _mark_last(blocks, message, index)
    raise InvalidRequest(
        f"user message {index} has no content; Anthropic rejects empty messages",
        details={"field": f"messages[{index}].content"},
    )


def _assistant_content(message: Message, index: int, provider: str | None) -> str | list[Block]:
    content = message.content
    calls = message.tool_calls
    if isinstance(content, str) and not calls and message.cache_control is None:
        return content  # plain text, or a prefill the model continues
    blocks: list[Block] = []
    if isinstance(content, str):
        if content:
            blocks.append(_text_block(content))
    elif content:
        for part in content:  # signed reasoning first, as the API requires
            if isinstance(part, ReasoningPart):
                block = _reasoning_block(part, provider)
                if block is not None:
                    blocks.append(block)
        for part in content:
            if isinstance(part, TextPart):
                block = _text_part_block(part, index)
                if block is not None:
                    blocks.append(block)
            elif isinstance(part, ImagePart):
                raise _bad_part(part, "an assistant message", index)
    blocks.extend(
        {"type": "tool_use", "id": call.id, "name": call.name, "input": call.parsed_arguments()}
        for call in calls or ()
    )
    return _mark_last(blocks, message, index)


def _tool_result(message: Message, index: int) -> Block:
    block: Block = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    content = message.content
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content:
        parts: list[Block] = []
        for part in content:
            if isinstance(part, TextPart):
                text = _text_part_block(part, index)
                if text is not None:
                    parts.append(text)
            elif isinstance(part, ImagePart):
                parts.append(_image_block(part))
            else:
                raise _bad_part(part, "a tool result", index)
        block["content"] = parts
    if message.is_error:
        block["is_error"] = True
    if message.cache_control is not None:
        block["cache_control"] = _cache_control(message.cache_control)
    return block


def _as_blocks(content: str | list[Block]) -> list[Block]:
    if isinstance(content, str):
        return [_text_block(content)] if content else []
    return content


def convert_messages(
    messages: Sequence[Message], *, provider: str | None = None
) -> tuple[str | list[Block] | None, list[Block]]:
    """Split a conversation into Anthropic's ``system`` and alternating ``messages``.

    Args:
        messages: the conversation.
        provider: the provider entry the body is for: reasoning another one made is left
            out (`ReasoningPart.belongs_to`); None sends every signed part.

    Returns:
        The ``system`` value (None when there is none) and the ``messages`` list.

    Raises:
        InvalidRequest: a part Anthropic cannot take where it is (an image in a system or
            assistant message, reasoning in a user or tool message), a user message without
            content, a tool call with malformed arguments, no user or assistant message, or
            a cache breakpoint with no block to carry it (an empty text part, a message
            ending in thinking) or twice on one block.
    """
    system: list[Message] = []
    system_index: list[int] = []
    turns: list[Block] = []
    merged_users: list[Block] = []
    for index, message in enumerate(messages):
        role = message.role
        content: str | list[Block]
        if role == "system" or role == "developer":
            system.append(message)
            system_index.append(index)
            continue
        if role == "tool":
            wire_role = "user"
            content = [_tool_result(message, index)]
        elif role == "user":
            wire_role = "user"
            content = _user_content(message, index)
        else:
            wire_role = "assistant"
            content = _assistant_content(message, index, provider)
            if not content and not isinstance(content, str):
                continue  # nothing Anthropic can take (only unsigned reasoning)
        if turns and turns[-1]["role"] == wire_role:
            last = turns[-1]
            last["content"] = _as_blocks(last["content"]) + _as_blocks(content)
            if wire_role == "user":
                merged_users.append(last)
        else:
            turns.append({"role": wire_role, "content": content})
    for turn in merged_users:
        # tool_result blocks must open the user message that answers the tool calls
        blocks: list[Block] = turn["content"]
        results = [b for b in blocks if b["type"] == "tool_result"]
        if results and blocks[: len(results)] != results:
            turn["content"] = results + [b for b in blocks if b["type"] != "tool_result"]
    if not turns:
        raise InvalidRequest(
            "Anthropic needs at least one user or assistant message besides system messages",
            details={"field": "messages"},
        )
    system_value: str | list[Block] | None = None
    if len(system) == 1 and isinstance(system[0].content, str) and system[0].cache_control is None:
        system_value = system[0].content or None
    elif system:
        blocks = []
        for message, index in zip(system, system_index, strict=True):
            blocks.extend(_system_blocks(message, index))
        system_value = blocks or None
    return system_value, turns


def _tool(spec: ToolSpec) -> Block:
    tool: Block = {
        "name": spec.name,
        "description": spec.description,
        "input_schema": spec.parameters,
    }
    if spec.strict is not None:
        tool["strict"] = spec.strict
    if spec.cache_control is not None:
        tool["cache_control"] = _cache_control(spec.cache_control)
    return tool


def _marked_blocks(body: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Every ``cache_control`` of the body's blocks with where it is, in prompt order
    (tools, system, messages), as the API counts them; the top-level one is not a block's."""
    found: list[tuple[str, Any]] = []

    def visit(blocks: Any, where: str) -> None:
        if not isinstance(blocks, list):
            return
        for i, block in enumerate(cast("list[Any]", blocks)):
            if not isinstance(block, dict):
                continue
            item = cast("dict[str, Any]", block)
            control = item.get("cache_control")
            if control is not None:
                found.append((f"{where}[{i}]", control))
            if item.get("type") == "tool_result":
                visit(item.get("content"), f"{where}[{i}].content")

    visit(body.get("tools"), "tools")
    visit(body.get("system"), "system")
    turns: Any = body.get("messages")
    for i, turn in enumerate(cast("list[Any]", turns) if isinstance(turns, list) else []):
        if isinstance(turn, dict):
            visit(cast("dict[str, Any]", turn).get("content"), f"messages[{i}].content")
    return found


def _check_breakpoints(body: Mapping[str, Any]) -> None:
    """Refuse what the API would: too many breakpoints, or a 1-hour one after a 5-minute one.

    Raises:
        InvalidRequest: as said; the message names the places in the Anthropic body.
    """
    marked = _marked_blocks(body)
    limit = CacheControl.MAX_PER_REQUEST
    if len(marked) > limit:
        where = [place for place, _ in marked]
        raise InvalidRequest(
            f"Anthropic takes at most {limit} cache breakpoints per request, got "
            f"{len(marked)}: {', '.join(where)}",
            details={"field": "cache_control", "locations": where},
        )
    short: str | None = None
    for place, control in marked:
        ttl: Any = (
            cast("dict[str, Any]", control).get("ttl", "5m") if isinstance(control, dict) else "5m"
        )
        if ttl == "5m" and short is None:
            short = place
        elif ttl == "1h" and short is not None:
            raise InvalidRequest(
                f"a 1-hour cache breakpoint ({place}) must come before every 5-minute one "
                f"({short}) in prompt order: tools, system, messages",
                details={"field": "cache_control", "locations": [short, place]},
            )


def _tool_choice(choice: ToolChoice) -> Block:
    if isinstance(choice, NamedToolChoice):
        return {"type": "tool", "name": choice.name}
    if choice == "required":
        return {"type": "any"}
    return {"type": choice}


def pop_betas(extra: dict[str, Any]) -> list[str]:
    """Remove the ``betas`` / ``anthropic_beta`` keys from ``extra``; return their flags.

    Raises:
        InvalidRequest: a value is neither a string nor a list of strings.
    """
    flags: list[str] = []
    for key in ("betas", "anthropic_beta"):
        value: Any = extra.pop(key, None)
        if value is None:
            continue
        if isinstance(value, str):
            items: list[Any] = value.split(",")
        elif isinstance(value, list | tuple):
            items = list(value)  # pyright: ignore[reportUnknownArgumentType]
        else:
            items = [value]
        for item in items:
            if not isinstance(item, str):
                raise InvalidRequest(
                    f"provider_options[{key!r}] must be a string or a list of strings",
                    details={"field": f"options.provider_options.{key}"},
                )
            flag = item.strip()
            if flag and flag not in flags:
                flags.append(flag)
    return flags


def _merge(body: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        current = body.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            body[key] = {**current, **value}
        else:
            body[key] = value


def build_body(
    request: Request,
    *,
    default_max_tokens: int,
    count_tokens: bool = False,
    provider: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The JSON body for ``request`` and the ``anthropic-beta`` flags it asks for.

    Args:
        request: the invocation.
        default_max_tokens: ``max_tokens`` when the request sets none (raised above a
            ``thinking.budget_tokens`` that reaches it, which the API requires).
        count_tokens: build a ``/v1/messages/count_tokens`` body instead (only the fields that
            endpoint accepts).
        provider: the provider entry the body is for (see `convert_messages`).

    Raises:
        InvalidRequest: the request uses something Anthropic cannot express (see
            `convert_messages`, ``seed``, penalties, a JSON object format without a schema),
            or cache breakpoints the API would refuse (more than
            `CacheControl.MAX_PER_REQUEST`, a ``"1h"`` one after a ``"5m"`` one).
    """
    options = request.options
    if not count_tokens:
        for name in UNSUPPORTED_OPTIONS:
            if getattr(options, name) is not None:
                raise InvalidRequest(
                    f"Anthropic does not support the {name!r} option; remove it",
                    details={"field": f"options.{name}", "option": name},
                )
    extra: dict[str, Any] = dict(options.provider_options or {})
    betas = pop_betas(extra)
    disable_parallel: Any = extra.pop("disable_parallel_tool_use", None)

    system, messages = convert_messages(request.messages, provider=provider)
    body: dict[str, Any] = {"model": request.model}
    if not count_tokens:
        max_tokens = options.max_tokens
        if max_tokens is None:
            max_tokens = default_max_tokens
            thinking: Any = extra.get("thinking")
            budget: Any = None
            if isinstance(thinking, dict):
                budget = cast("dict[str, Any]", thinking).get("budget_tokens")
            if isinstance(budget, int) and budget >= max_tokens:
                max_tokens = budget + default_max_tokens
        body["max_tokens"] = max_tokens
    body["messages"] = messages
    if system is not None:
        body["system"] = system
    if not count_tokens:
        if options.temperature is not None:
            body["temperature"] = options.temperature
        if options.top_p is not None:
            body["top_p"] = options.top_p
        if options.top_k is not None:
            body["top_k"] = options.top_k
        if options.stop:
            body["stop_sequences"] = list(options.stop)
    has_tools = bool(request.tools) or "tools" in extra
    if request.tools:
        body["tools"] = [_tool(spec) for spec in request.tools]
    choice = request.tool_choice
    if choice is not None and has_tools:
        body["tool_choice"] = _tool_choice(choice)
    elif choice == "required":
        raise InvalidRequest(
            "tool_choice 'required' needs at least one tool", details={"field": "tool_choice"}
        )
    if disable_parallel is not None and has_tools:
        tool_choice: Block = body.setdefault("tool_choice", {"type": "auto"})
        if tool_choice["type"] != "none":
            tool_choice["disable_parallel_tool_use"] = bool(disable_parallel)
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        if fmt.type == "json_schema":
            body["output_config"] = {"format": {"type": "json_schema", "schema": fmt.json_schema}}
        elif not _has_format(extra):
            raise InvalidRequest(
                "Anthropic has no JSON mode without a schema: use ResponseFormat.schema(...) "
                "(sent as output_config.format), or force a tool with tool_choice",
                details={"field": "response_format", "type": fmt.type},
            )
    if request.stream and not count_tokens:
        body["stream"] = True
    _merge(body, extra)
    _check_breakpoints(body)
    if count_tokens:
        body = {key: value for key, value in body.items() if key in COUNT_TOKENS_KEYS}
    return body, betas


def _has_format(extra: Mapping[str, Any]) -> bool:
    config: Any = extra.get("output_config")
    return (isinstance(config, dict) and "format" in config) or "output_format" in extra
