"""Token counting: exact counts for OpenAI models, calibrated estimates for the others."""

from ._count import ANTHROPIC_FACTOR as ANTHROPIC_FACTOR
from ._count import ANTHROPIC_SCHEMA_OVERHEAD as ANTHROPIC_SCHEMA_OVERHEAD
from ._count import ANTHROPIC_THINKING_OVERHEAD as ANTHROPIC_THINKING_OVERHEAD
from ._count import ANTHROPIC_TOOL_BLOCK_OVERHEAD as ANTHROPIC_TOOL_BLOCK_OVERHEAD
from ._count import ANTHROPIC_TOOLS_OVERHEAD as ANTHROPIC_TOOLS_OVERHEAD
from ._count import ANTHROPIC_TOOLS_OVERHEAD_4_5 as ANTHROPIC_TOOLS_OVERHEAD_4_5
from ._count import DEFAULT_ENCODING as DEFAULT_ENCODING
from ._count import DEFAULT_MAX_COMPLETION_TOKENS as DEFAULT_MAX_COMPLETION_TOKENS
from ._count import ENCODINGS as ENCODINGS
from ._count import GEMINI_FACTOR as GEMINI_FACTOR
from ._count import LARGE_INPUT as LARGE_INPUT
from ._count import OTHER_FACTOR as OTHER_FACTOR
from ._count import ChatRule as ChatRule
from ._count import CountCacheStatistics as CountCacheStatistics
from ._count import EncodingDefinition as EncodingDefinition
from ._count import Family as Family
from ._count import PromptCount as PromptCount
from ._count import StreamTokenCounter as StreamTokenCounter
from ._count import TokenCounter as TokenCounter
from ._count import TokenEncoding as TokenEncoding
from ._count import TokenEstimate as TokenEstimate
from ._count import chat_rule as chat_rule
from ._count import count_cache_statistics as count_cache_statistics
from ._count import count_messages as count_messages
from ._count import count_request as count_request
from ._count import count_text as count_text
from ._count import encoding_for_model as encoding_for_model
from ._count import encoding_name_for_model as encoding_name_for_model
from ._count import estimate as estimate
from ._count import family_of as family_of
from ._count import get_encoding as get_encoding
from ._count import image_size as image_size
from ._count import is_loaded as is_loaded
from ._count import load_encoding as load_encoding
from ._count import openai_image_tokens as openai_image_tokens
from ._count import preload_encodings as preload_encodings
from ._count import render_tools as render_tools

__all__ = [
    "ANTHROPIC_FACTOR",
    "ANTHROPIC_SCHEMA_OVERHEAD",
    "ANTHROPIC_THINKING_OVERHEAD",
    "ANTHROPIC_TOOLS_OVERHEAD",
    "ANTHROPIC_TOOLS_OVERHEAD_4_5",
    "ANTHROPIC_TOOL_BLOCK_OVERHEAD",
    "DEFAULT_ENCODING",
    "DEFAULT_MAX_COMPLETION_TOKENS",
    "ENCODINGS",
    "GEMINI_FACTOR",
    "LARGE_INPUT",
    "OTHER_FACTOR",
    "ChatRule",
    "CountCacheStatistics",
    "EncodingDefinition",
    "Family",
    "PromptCount",
    "StreamTokenCounter",
    "TokenCounter",
    "TokenEncoding",
    "TokenEstimate",
    "chat_rule",
    "count_cache_statistics",
    "count_messages",
    "count_request",
    "count_text",
    "encoding_for_model",
    "encoding_name_for_model",
    "estimate",
    "family_of",
    "get_encoding",
    "image_size",
    "is_loaded",
    "load_encoding",
    "openai_image_tokens",
    "preload_encodings",
    "render_tools",
]
