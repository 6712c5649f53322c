"""A server's ``sampling/createMessage``, answered by this client's own models.

`create_message` converts the server's request into a `Request` (the system prompt first,
text and image content, ``maxTokens`` capped by `MCPSampling.max_tokens`, temperature and
stop sequences, ``metadata={"mcp_server": <name>}``), lets the policy approve, edit or refuse
it, sends it through the client's governed path (the `Sampler`) and converts the answer into
the SDK's ``CreateMessageResult``. Every way it can fail (content we cannot carry, the
policy's refusal, a budget, a provider's error) is a JSON-RPC error for that request, logged
once; nothing of it reaches the connection.
"""

from __future__ import annotations

import logging
from typing import Final

import mcp_types

from ...errors import LLMError
from ...types import ImagePart, Message, ModelOptions, Part, Request, Response, TextPart
from ._host import (
    MCPSampling,
    MCPSamplingRefused,
    MCPSamplingRequest,
    Sampler,
    SamplingPolicy,
    call_maybe_async,
)

__all__ = ["REFUSED", "create_message", "sampling_request", "sampling_result"]

log = logging.getLogger("llm_invocation.mcp")

REFUSED: Final = -1
"""The JSON-RPC error code of a request the user (here: the policy) refused, as MCP uses it."""

_STOP_REASONS: Final = {
    "stop": "endTurn",
    "length": "maxTokens",
    "tool_calls": "toolUse",
}


class _Unsupported(Exception):
    """The request asks for what this client does not do; the message says what."""


def _parts(message: mcp_types.SamplingMessage) -> list[Part]:
    parts: list[Part] = []
    for block in message.content_as_list:
        match block:
            case mcp_types.TextContent():
                parts.append(TextPart(text=block.text))
            case mcp_types.ImageContent():
                parts.append(ImagePart(data=block.data, media_type=block.mime_type))
            case _:
                raise _Unsupported(f"{block.type} content is not supported in sampling")
    return parts


def sampling_request(
    server: str,
    params: mcp_types.CreateMessageRequestParams,
    sampling: MCPSampling,
    default_model: str | None,
) -> MCPSamplingRequest:
    """The policy's view of ``params``, with the converted `Request`.

    Raises:
        _Unsupported: tools, or content other than text and images, or no model to use.
        LLMError: an option is out of range for a `Request`.
    """
    if params.tools:
        raise _Unsupported("sampling with tools is not supported")
    model = sampling.model or default_model
    if not model:
        raise _Unsupported("no model is configured for sampling")
    messages: list[Message] = []
    if params.system_prompt:
        messages.append(Message(role="system", content=params.system_prompt))
    messages.extend(Message(role=item.role, content=_parts(item)) for item in params.messages)
    options = ModelOptions(
        max_tokens=max(1, min(params.max_tokens, sampling.max_tokens)),
        temperature=params.temperature,
        stop=list(params.stop_sequences) if params.stop_sequences else None,
    )
    request = Request(
        model=model,
        provider=sampling.provider,
        messages=messages,
        options=options,
        stream=False,
        metadata={"mcp_server": server},
    )
    prefs = params.model_preferences
    hints = [hint.name for hint in (prefs.hints or []) if hint.name] if prefs else []
    return MCPSamplingRequest(
        server=server,
        request=request,
        max_tokens=params.max_tokens,
        model_hints=hints,
        cost_priority=prefs.cost_priority if prefs else None,
        speed_priority=prefs.speed_priority if prefs else None,
        intelligence_priority=prefs.intelligence_priority if prefs else None,
        include_context=params.include_context,
    )


def sampling_result(response: Response) -> mcp_types.CreateMessageResult:
    """Our answer as the SDK's result: the assistant's text, the model, why it stopped."""
    reason = response.finish_reason
    stop = _STOP_REASONS.get(reason, reason) if reason is not None else None
    return mcp_types.CreateMessageResult(
        role="assistant",
        content=mcp_types.TextContent(text=response.text),
        model=response.model,
        stop_reason=stop,
    )


def _error(server: str, code: int, text: str, detail: str | None = None) -> mcp_types.ErrorData:
    """The server's error (``text``), logged once with our ``detail`` (kept from the server)."""
    log.warning("MCP server %r: sampling request not answered: %s", server, detail or text)
    return mcp_types.ErrorData(code=code, message=text)


async def create_message(
    server: str,
    params: mcp_types.CreateMessageRequestParams,
    *,
    sampling: MCPSampling,
    policy: SamplingPolicy | None,
    sampler: Sampler | None,
    default_model: str | None,
) -> mcp_types.CreateMessageResult | mcp_types.ErrorData:
    """Answer one ``sampling/createMessage`` (see the module); never raises but cancellation."""
    if sampler is None:
        return _error(server, mcp_types.INTERNAL_ERROR, "sampling is not available yet")
    try:
        asked = sampling_request(server, params, sampling, default_model)
    except _Unsupported as exc:
        return _error(server, mcp_types.INVALID_PARAMS, str(exc))
    except LLMError as exc:
        return _error(server, mcp_types.INVALID_PARAMS, exc.message)
    request: Request | None = asked.request
    if policy is not None:
        try:
            request = await call_maybe_async(policy, asked)
        except MCPSamplingRefused as exc:
            return _error(server, REFUSED, f"refused by the sampling policy: {exc}")
        except Exception as exc:
            log.exception("MCP server %r: the sampling policy failed", server)
            return mcp_types.ErrorData(
                code=REFUSED, message=f"refused: the sampling policy failed ({type(exc).__name__})"
            )
        if request is None:
            return _error(server, REFUSED, "refused by the sampling policy")
        if not isinstance(request, Request):  # pyright: ignore[reportUnnecessaryIsInstance] - user code
            return _error(
                server,
                REFUSED,
                f"refused: the sampling policy returned a {type(request).__name__}, not a Request",
            )
    try:
        response = await sampler(request)
    except LLMError as exc:
        # The server hears what kind of failure it was; our limits and spend stay here.
        detail = f"{exc.code}: {exc.message}"
        return _error(server, mcp_types.INTERNAL_ERROR, f"sampling failed: {exc.code}", detail)
    return sampling_result(response)
