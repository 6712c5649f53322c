"""Encoding a `Request` for the OpenAI Responses API (``POST {base}/responses``).

WIRE-FORMATS 2. What goes where:

* the leading ``system`` messages become ``instructions`` (joined by a blank line); every
  other message is an input item: ``{"role", "content"}`` with a string, or with
  ``input_text`` / ``input_image`` parts (a ``developer`` message stays a developer item);
* an assistant message's `ReasoningPart` parts that carry a Responses signature (see
  `_responses_wire.reasoning_signature`) go back as ``reasoning`` items with their
  encrypted content (needed when ``store`` is false), unless another provider entry made
  them (`ReasoningPart.provider`: its encrypted content is not this one's to read); other
  reasoning is not sent, as in Chat Completions; its text becomes an assistant item, its
  tool calls ``function_call`` items (``call_id``, ``name``, ``arguments``);
* a tool message is a ``function_call_output`` item; one with images has a list of
  ``input_text`` and ``input_image`` parts as its output, as the API takes them;
* tools are flat ``{"type": "function", "name", "description", "parameters"[, "strict"]}``;
  a named tool choice is ``{"type": "function", "name"}``; the response format goes in
  ``text.format``; ``max_tokens`` is ``max_output_tokens``;
* ``provider_options``: ``api`` is consumed (it chose this API), ``reasoning_effort`` becomes
  ``reasoning.effort`` and ``verbosity`` ``text.verbosity``; ``use_max_completion_tokens``
  means nothing here and is consumed; every other key (``store``,
  ``previous_response_id``, ``include``, ``reasoning``, ``truncation``, ``metadata``...) is
  merged into the body last, objects one level deep, and wins.

A message's ``name`` is not sent: the Responses API has no field for it. ``stop``,
``seed``, ``top_k``, ``frequency_penalty`` and ``presence_penalty`` have no Responses
equivalent and are refused (`InvalidRequest` naming the field), never dropped.
"""

from __future__ import annotations

from typing import Any, Final, Literal, cast

from ..errors import ConfigProblem, ConfigurationError, InvalidRequest
from ..types import ImagePart, Message, NamedToolChoice, Part, ReasoningPart, Request, TextPart
from ._options import ProviderOptions
from ._responses_wire import parse_signature

__all__ = [
    "API_OPTION",
    "APIS",
    "CONSUMED_OPTIONS",
    "Api",
    "check_options",
    "chosen_api",
    "refuse_unsupported",
    "responses_body",
    "unsupported_options",
]

API_OPTION: Final = "api"
"""The ``provider_options`` key that chooses the API of one request: ``"responses"`` or
``"chat"``."""

CONSUMED_OPTIONS: Final = frozenset({API_OPTION, "use_max_completion_tokens"})
_UNSUPPORTED: Final = ("stop", "seed", "top_k", "frequency_penalty", "presence_penalty")


def unsupported_options(request: Request) -> list[str]:
    """The `ModelOptions` fields ``request`` sets that the Responses API has no field for."""
    options = request.options
    return [name for name in _UNSUPPORTED if getattr(options, name) is not None]


def check_options(api: Api, options: ProviderOptions, *, provider: str) -> None:
    """Check a provider entry's options for ``api``.

    Raises:
        ConfigurationError: they name ``api`` (the entry's ``api`` field chooses it), or,
            for the Responses API, set a sampling default it has no field for.
    """
    problems: list[ConfigProblem] = []
    path = f"providers.{provider}.options"
    if API_OPTION in options.fields:
        problems.append(
            ConfigProblem(
                path=f"{path}.api", message=f"choose the API with providers.{provider}.api"
            )
        )
    defaults = options.defaults
    if api == "responses" and defaults is not None:
        problems.extend(
            ConfigProblem(
                path=f"{path}.{name}", message="the OpenAI Responses API has no such field"
            )
            for name in _UNSUPPORTED
            if getattr(defaults, name) is not None
        )
    if problems:
        raise ConfigurationError(problems=problems, provider=provider)


def refuse_unsupported(request: Request, *, provider: str) -> None:
    """Refuse a request with an option the Responses API has no field for.

    Raises:
        InvalidRequest: ``details["field"]`` names the first such option.
    """
    unsupported = unsupported_options(request)
    if unsupported:
        raise InvalidRequest(
            f"the OpenAI Responses API has no {unsupported[0]}: leave it unset, or choose "
            "the chat API for this request",
            provider=provider,
            details={"field": unsupported[0]},
        )


def _parts(parts: list[Part], *, role: str, provider: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            out.append({"type": "input_text", "text": part.text})
        elif isinstance(part, ImagePart):
            if role == "assistant":
                raise InvalidRequest(
                    "the OpenAI Responses API takes no images in an assistant message",
                    provider=provider,
                    details={"field": "messages", "role": role},
                )
            image: dict[str, Any] = {"type": "input_image", "image_url": part.as_url()}
            if part.detail is not None:
                image["detail"] = part.detail
            out.append(image)
    return out


def _content(message: Message, provider: str) -> str | list[dict[str, Any]]:
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    if not any(isinstance(part, ImagePart) for part in content):
        return message.text
    return _parts(content, role=message.role, provider=provider)


def _assistant(message: Message, provider: str, items: list[dict[str, Any]]) -> None:
    content = message.content
    text: list[str] = []

    def flush() -> None:
        if text:
            items.append({"role": "assistant", "content": "".join(text)})
            text.clear()

    if isinstance(content, str):
        text.append(content)
    else:
        for part in content or ():
            if isinstance(part, TextPart):
                text.append(part.text)
            elif isinstance(part, ReasoningPart):
                signed = parse_signature(part.signature)
                if signed is None or not part.belongs_to(provider):
                    continue
                flush()
                summary = [{"type": "summary_text", "text": part.text}] if part.text else []
                items.append(
                    {
                        "type": "reasoning",
                        "id": signed[0],
                        "encrypted_content": signed[1],
                        "summary": summary,
                    }
                )
            else:
                _parts([part], role="assistant", provider=provider)  # raises
    flush()
    items.extend(
        {
            "type": "function_call",
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments,
        }
        for call in message.tool_calls or ()
    )


def _tool_output(message: Message, provider: str) -> dict[str, Any]:
    content = message.content
    output: str | list[dict[str, Any]]
    if isinstance(content, list) and any(isinstance(part, ImagePart) for part in content):
        output = _parts(content, role="tool", provider=provider)
    else:
        output = message.text
    return {"type": "function_call_output", "call_id": message.tool_call_id, "output": output}


def _input(request: Request, provider: str) -> tuple[str | None, list[dict[str, Any]]]:
    messages = request.messages
    instructions: list[str] = []
    start = 0
    while start < len(messages) and messages[start].role == "system":
        system = messages[start]
        if system.images:
            break  # an image in a system message: send it as an input item
        instructions.append(system.text)
        start += 1
    items: list[dict[str, Any]] = []
    for message in messages[start:]:
        role = message.role
        if role == "assistant":
            _assistant(message, provider, items)
        elif role == "tool":
            items.append(_tool_output(message, provider))
        else:
            items.append({"role": role, "content": _content(message, provider)})
    return ("\n\n".join(instructions) if instructions else None), items


def _merge(body: dict[str, Any], key: str, value: Any) -> None:
    current = body.get(key)
    if isinstance(value, dict) and isinstance(current, dict):
        body[key] = {**cast("dict[str, Any]", current), **cast("dict[str, Any]", value)}
    else:
        body[key] = value


def responses_body(request: Request, *, model: str, provider: str) -> dict[str, Any]:
    """The JSON body of ``POST /responses`` for ``request``, as plain data.

    Args:
        request: the request, provider entry options already applied.
        model: the model (or Azure deployment) to name.
        provider: the provider's name, for errors.

    Raises:
        InvalidRequest: an option without a Responses equivalent, or an image in an
            assistant message.
    """
    refuse_unsupported(request, provider=provider)
    instructions, items = _input(request, provider)
    body: dict[str, Any] = {"model": model, "input": items}
    if instructions is not None:
        body["instructions"] = instructions
    options = request.options
    if options.temperature is not None:
        body["temperature"] = options.temperature
    if options.top_p is not None:
        body["top_p"] = options.top_p
    if options.max_tokens is not None:
        body["max_output_tokens"] = options.max_tokens
    if request.tools:
        tools: list[dict[str, Any]] = []
        for tool in request.tools:
            spec: dict[str, Any] = {
                "type": "function",
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters,
            }
            if tool.strict is not None:
                spec["strict"] = tool.strict
            tools.append(spec)
        body["tools"] = tools
    choice = request.tool_choice
    if choice is not None:
        body["tool_choice"] = (
            {"type": "function", "name": choice.name}
            if isinstance(choice, NamedToolChoice)
            else choice
        )
    fmt = request.response_format
    if fmt is not None:
        if fmt.type == "json_schema":
            schema: dict[str, Any] = {
                "type": "json_schema",
                "name": fmt.name or "response",
                "schema": fmt.json_schema,
            }
            if fmt.description is not None:
                schema["description"] = fmt.description
            if fmt.strict is not None:
                schema["strict"] = fmt.strict
            body["text"] = {"format": schema}
        else:
            body["text"] = {"format": {"type": fmt.type}}
    if request.stream:
        body["stream"] = True
    for key, value in (options.provider_options or {}).items():
        if key in CONSUMED_OPTIONS:
            continue
        if key == "reasoning_effort":
            _merge(body, "reasoning", {"effort": value})
        elif key == "verbosity":
            _merge(body, "text", {"verbosity": value})
        else:
            _merge(body, key, value)
    return body


Api = Literal["chat", "responses"]
"""The OpenAI APIs a request can go to: Chat Completions or Responses."""

APIS: Final[tuple[Api, ...]] = ("chat", "responses")


def chosen_api(request: Request, default: Api, *, provider: str) -> Api:
    """The API ``request`` goes to: its ``provider_options["api"]``, else ``default``.

    Raises:
        InvalidRequest: ``provider_options["api"]`` is neither ``"chat"`` nor ``"responses"``.
    """
    extra = request.options.provider_options
    chosen: Any = extra.get(API_OPTION) if extra else None
    if chosen is None:
        return default
    if chosen == "chat" or chosen == "responses":
        return chosen
    raise InvalidRequest(
        f"provider_options['api'] must be 'chat' or 'responses', got {chosen!r}",
        provider=provider,
        details={"field": "options.provider_options.api"},
    )
