"""Build the body of a Gemini ``generateContent`` request from a `Request`.

Mapping (``WIRE-FORMATS.md`` 4.2):

* system and developer messages, wherever they are, become ``systemInstruction`` parts, in
  order; user messages are role ``user``, assistant messages role ``model``; tool results are
  ``functionResponse`` parts in a role ``user`` content; consecutive contents of the same role
  are merged into one (so parallel tool results share a content);
* an inline image is ``inlineData``, an image URL ``fileData`` (the MIME type is the part's
  ``media_type``, else guessed from the URL's extension, else ``image/jpeg``);
* an assistant `ReasoningPart` with text is sent back as a ``thought`` part (with its
  signature); one with only a signature lends it, as ``thoughtSignature``, to the content part
  that follows it (the part it arrived with), or becomes an empty signed text part when none
  follows. Reasoning another provider made (`ReasoningPart.provider` names another entry)
  loses its signature: its text goes as an unsigned ``thought`` part, a bare signature or
  redacted data not at all; a `ToolCall` is a ``functionCall`` part with ``thoughtSignature`` from
  ``metadata["thought_signature"]``, verbatim;
* a tool result whose text is a JSON object is sent as that object, anything else as
  ``{"output": <text>}`` (``{"error": <text or object>}`` when ``is_error``), the keys the API
  documents for ``FunctionResponse.response``; its name is ``Message.name`` or the name of the
  earlier call with that ``tool_call_id``;
* images returned by tools are ``inlineData`` (or ``fileData``) parts of the same content,
  after all of its ``functionResponse`` parts, each result's images under a text part naming
  the call (``Images returned by tool call <id> (<name>):``); a result with images and no
  text says so in its response. (``FunctionResponse.parts`` would nest them, but only some
  models take it; sibling parts work with every model.)
* ``provider_options`` (keys camel-cased): a ``GenerationConfig`` field (``thinkingConfig``,
  ``responseModalities``, ``candidateCount``...) goes into ``generationConfig``;
  ``generationConfig`` merges into it; ``tools`` entries (built-in tools such as
  ``{"googleSearch": {}}``) are appended to ``tools``; ``toolConfig`` merges into ours; any
  other key (``safetySettings``, ``cachedContent``, ``labels``...) is set at the top level of
  the body, replacing what was built.
"""

from __future__ import annotations

from typing import Any, Final, cast

import msgspec

from ..errors import InvalidRequest
from ..types import ImagePart, Message, NamedToolChoice, ReasoningPart, Request, TextPart
from ._base import JSON_ERRORS
from ._tool_images import image_label, tool_image_note

__all__ = [
    "GENERATION_KEYS",
    "MAX_STOP_SEQUENCES",
    "build_body",
    "camel_case",
    "guess_mime_type",
    "model_path",
]

MAX_STOP_SEQUENCES: Final = 5
"""Gemini takes at most five stop sequences (``GenerationConfig.stopSequences``)."""

GENERATION_KEYS: Final = frozenset(
    {
        "audioTimestamp",
        "candidateCount",
        "enableAffectiveDialog",
        "enableEnhancedCivicAnswers",
        "frequencyPenalty",
        "imageConfig",
        "logprobs",
        "maxOutputTokens",
        "mediaResolution",
        "modelSelectionConfig",
        "presencePenalty",
        "responseJsonSchema",
        "responseLogprobs",
        "responseMimeType",
        "responseModalities",
        "responseSchema",
        "routingConfig",
        "seed",
        "speechConfig",
        "stopSequences",
        "temperature",
        "thinkingConfig",
        "topK",
        "topP",
    }
)
"""``GenerationConfig`` fields: provider options with these names go into ``generationConfig``."""

_TOOL_CHOICE_MODES: Final = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_MIME_BY_EXTENSION: Final = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
    "bmp": "image/bmp",
    "tif": "image/tiff",
    "tiff": "image/tiff",
    "svg": "image/svg+xml",
}
_DEFAULT_IMAGE_MIME: Final = "image/jpeg"
_JSON: Final = msgspec.json.Decoder()


def model_path(model: str) -> str:
    """The resource path of ``model``: ``models/<id>``, or the id itself when it has a slash
    (``tunedModels/...``)."""
    return model if "/" in model else f"models/{model}"


def guess_mime_type(url: str) -> str:
    """The image MIME type the extension of ``url``'s path suggests (``image/jpeg`` by default)."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    name = path.rsplit("/", 1)[-1]
    _, dot, extension = name.rpartition(".")
    if not dot:
        return _DEFAULT_IMAGE_MIME
    return _MIME_BY_EXTENSION.get(extension.lower(), _DEFAULT_IMAGE_MIME)


def camel_case(key: str) -> str:
    """``key`` in the API's spelling: ``candidate_count`` -> ``candidateCount``."""
    if "_" not in key:
        return key
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _image(part: ImagePart) -> dict[str, Any]:
    if part.data is not None:
        return {"inlineData": {"mimeType": part.media_type, "data": part.data}}
    url = part.url or ""
    if url.startswith("data:"):
        inline = ImagePart.from_url(url)
        return {"inlineData": {"mimeType": inline.media_type, "data": inline.data}}
    return {"fileData": {"mimeType": part.media_type or guess_mime_type(url), "fileUri": url}}


def _text_and_image_parts(message: Message, index: int, *, system: bool) -> list[dict[str, Any]]:
    """A system or user message's parts (the system instruction takes text only)."""
    content = message.content
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            if part.text:
                parts.append({"text": part.text})
        elif isinstance(part, ImagePart):
            if system:
                raise InvalidRequest(
                    "Gemini's system instruction takes text only, not images",
                    details={"field": f"messages[{index}].content"},
                )
            parts.append(_image(part))
        # a ReasoningPart in a system or user message has no Gemini equivalent: left out
    return parts


def _assistant_parts(
    message: Message, index: int, call_names: dict[str, str], provider: str | None
) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    content = message.content
    if isinstance(content, str):
        if content:
            parts.append({"text": content})
    elif content:
        pending: str | None = None  # a signature waiting for the part it came with
        for part in content:
            out: dict[str, Any]
            if isinstance(part, ReasoningPart):
                if part.redacted:
                    continue  # another provider's opaque thinking: meaningless to Gemini
                signature = part.signature if part.belongs_to(provider) else None
                if not part.text:
                    if signature:
                        if pending is not None:
                            parts.append({"text": "", "thoughtSignature": pending})
                        pending = signature
                    continue
                if pending is not None:
                    parts.append({"text": "", "thoughtSignature": pending})
                    pending = None
                out = {"text": part.text, "thought": True}
                if signature:
                    out["thoughtSignature"] = signature
                parts.append(out)
                continue
            if isinstance(part, TextPart):
                if not part.text and pending is None:
                    continue
                out = {"text": part.text}
            else:
                out = _image(part)
            if pending is not None:
                out["thoughtSignature"] = pending
                pending = None
            parts.append(out)
        if pending is not None:
            parts.append({"text": "", "thoughtSignature": pending})
    for n, call in enumerate(message.tool_calls or ()):
        call_names[call.id] = call.name
        try:
            args = call.parsed_arguments()
        except InvalidRequest as exc:
            exc.details.setdefault("field", f"messages[{index}].tool_calls[{n}].arguments")
            raise
        out = {"functionCall": {"name": call.name, "args": args}}
        signature: Any = (call.metadata or {}).get("thought_signature")
        if isinstance(signature, str) and signature:
            out["thoughtSignature"] = signature
        parts.append(out)
    return parts


def _function_response(text: str, *, is_error: bool) -> dict[str, Any]:
    value: Any = None
    if text.lstrip()[:1] == "{":
        try:
            value = _JSON.decode(text)
        except JSON_ERRORS:
            value = None
    if isinstance(value, dict):
        return {"error": value} if is_error else value  # pyright: ignore[reportUnknownVariableType]
    return {"error": text} if is_error else {"output": text}


def _tool_parts(
    message: Message, index: int, call_names: dict[str, str], shown: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The ``functionResponse`` part of a tool result; its images, labelled, go to ``shown``."""
    call_id = message.tool_call_id or ""
    name = message.name or call_names.get(call_id)
    if not name:
        raise InvalidRequest(
            f"the tool result for call {call_id!r} needs the tool's name: no earlier assistant "
            "message made that call, so set Message.name",
            details={"field": f"messages[{index}].name", "tool_call_id": call_id},
        )
    content = message.content
    images: list[dict[str, Any]] = []
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        text = "".join([p.text for p in content if isinstance(p, TextPart)])
        images = [_image(p) for p in content if isinstance(p, ImagePart)]
    if images:
        if not text:
            text = tool_image_note(len(images), "after the function responses")
        shown.append({"text": image_label(message)})
        shown.extend(images)
    response = _function_response(text, is_error=message.is_error)
    return [{"functionResponse": {"name": name, "response": response}}]


def _contents(
    request: Request, provider: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    contents: list[dict[str, Any]] = []
    system: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    shown: list[dict[str, Any]] = []  # images of the current run of tool results, labelled
    for index, message in enumerate(request.messages):
        role = message.role
        if shown and role != "tool":
            contents[-1]["parts"].extend(shown)  # after the run's function responses
            shown = []
        if role == "system" or role == "developer":
            system.extend(_text_and_image_parts(message, index, system=True))
            continue
        if role == "user":
            wire_role = "user"
            parts = _text_and_image_parts(message, index, system=False)
        elif role == "assistant":
            wire_role = "model"
            parts = _assistant_parts(message, index, call_names, provider)
        else:
            wire_role = "user"
            parts = _tool_parts(message, index, call_names, shown)
        if not parts:
            continue
        if contents and contents[-1]["role"] == wire_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": wire_role, "parts": parts})
    if shown:
        contents[-1]["parts"].extend(shown)
    return contents, system


def _generation_config(request: Request) -> dict[str, Any]:
    options = request.options
    config: dict[str, Any] = {}
    if options.temperature is not None:
        config["temperature"] = options.temperature
    if options.top_p is not None:
        config["topP"] = options.top_p
    if options.top_k is not None:
        config["topK"] = options.top_k
    if options.max_tokens is not None:
        config["maxOutputTokens"] = options.max_tokens
    if options.stop:
        if len(options.stop) > MAX_STOP_SEQUENCES:
            raise InvalidRequest(
                f"Gemini takes at most {MAX_STOP_SEQUENCES} stop sequences, "
                f"got {len(options.stop)}",
                details={"field": "options.stop"},
            )
        config["stopSequences"] = list(options.stop)
    if options.seed is not None:
        config["seed"] = options.seed
    if options.presence_penalty is not None:
        config["presencePenalty"] = options.presence_penalty
    if options.frequency_penalty is not None:
        config["frequencyPenalty"] = options.frequency_penalty
    response_format = request.response_format
    if response_format is not None:
        if response_format.type == "json_object":
            config["responseMimeType"] = "application/json"
        elif response_format.type == "json_schema":
            config["responseMimeType"] = "application/json"
            config["responseJsonSchema"] = response_format.json_schema
    return config


def _apply_provider_options(
    body: dict[str, Any], config: dict[str, Any], options: dict[str, Any]
) -> None:
    for key, value in options.items():
        name = camel_case(key)
        if name in GENERATION_KEYS:
            config[name] = value
        elif name == "generationConfig" and isinstance(value, dict):
            for inner, item in cast("dict[str, Any]", value).items():
                config[camel_case(inner)] = item
        elif name == "tools" and isinstance(value, list):
            body.setdefault("tools", []).extend(cast("list[Any]", value))
        elif name == "toolConfig" and isinstance(value, dict):
            body.setdefault("toolConfig", {}).update(cast("dict[str, Any]", value))
        else:
            body[name] = value


def build_body(request: Request, *, provider: str | None = None) -> dict[str, Any]:
    """The JSON body (as plain data) of ``generateContent`` for ``request``.

    Args:
        request: the invocation.
        provider: the provider entry the body is for: reasoning another one made goes
            without its signature (`ReasoningPart.belongs_to`); None keeps every signature.

    Raises:
        InvalidRequest: a tool result whose tool name cannot be found, tool-call arguments
            that are not a JSON object, an image in a system message, or more than five stop
            sequences.
    """
    contents, system = _contents(request, provider)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    if request.tools:
        declarations: list[dict[str, Any]] = []
        for tool in request.tools:
            declaration: dict[str, Any] = {"name": tool.name}
            if tool.description:
                declaration["description"] = tool.description
            declaration["parametersJsonSchema"] = tool.parameters
            declarations.append(declaration)
        body["tools"] = [{"functionDeclarations": declarations}]
    choice = request.tool_choice
    if choice is not None and request.tools:
        if isinstance(choice, NamedToolChoice):
            calling: dict[str, Any] = {"mode": "ANY", "allowedFunctionNames": [choice.name]}
        else:
            calling = {"mode": _TOOL_CHOICE_MODES[choice]}
        body["toolConfig"] = {"functionCallingConfig": calling}
    config = _generation_config(request)
    provider_options = request.options.provider_options
    if provider_options:
        _apply_provider_options(body, config, provider_options)
    if config:
        body["generationConfig"] = config
    return body
