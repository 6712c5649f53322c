"""llm-invocation: a trio-native, supervised actor runtime for invoking LLMs.

The public API: `open_client` and the `Client` it gives, the domain types, the typed
errors and `Config`. The generic actor runtime is `llm_invocation.runtime`; the mock
provider's scenarios and the fake provider server are in `llm_invocation.testing`.
"""

from ._secrets import Secret as Secret
from ._version import __version__ as __version__
from .actors.accountant import BudgetAlert as BudgetAlert
from .actors.mcp import InProcessMCPServer as InProcessMCPServer
from .actors.mcp import MCPAuth as MCPAuth
from .actors.mcp import MCPCompletion as MCPCompletion
from .actors.mcp import MCPElicitation as MCPElicitation
from .actors.mcp import MCPElicitationAnswer as MCPElicitationAnswer
from .actors.mcp import MCPEvent as MCPEvent
from .actors.mcp import MCPProgress as MCPProgress
from .actors.mcp import MCPPrompt as MCPPrompt
from .actors.mcp import MCPPromptArgument as MCPPromptArgument
from .actors.mcp import MCPPromptResult as MCPPromptResult
from .actors.mcp import MCPResource as MCPResource
from .actors.mcp import MCPResourceTemplate as MCPResourceTemplate
from .actors.mcp import MCPRoot as MCPRoot
from .actors.mcp import MCPSampling as MCPSampling
from .actors.mcp import MCPSamplingRefused as MCPSamplingRefused
from .actors.mcp import MCPSamplingRequest as MCPSamplingRequest
from .actors.mcp import MCPServerHandle as MCPServerHandle
from .actors.mcp import MCPServerInfo as MCPServerInfo
from .actors.mcp import MCPTool as MCPTool
from .actors.mcp import MCPToolAnnotations as MCPToolAnnotations
from .actors.mcp import PromptsChanged as PromptsChanged
from .actors.mcp import ResourcesChanged as ResourcesChanged
from .actors.mcp import ResourceUpdated as ResourceUpdated
from .actors.mcp import mcp_server as mcp_server
from .client import Client as Client
from .client import open_anthropic_client as open_anthropic_client
from .client import open_client as open_client
from .client import open_gemini_client as open_gemini_client
from .client import open_mock_client as open_mock_client
from .client import open_openai_client as open_openai_client
from .config import Config as Config
from .config import MCPServerConfig as MCPServerConfig
from .errors import AuthenticationError as AuthenticationError
from .errors import ConfigProblem as ConfigProblem
from .errors import ConfigurationError as ConfigurationError
from .errors import CostExceeded as CostExceeded
from .errors import ErrorCode as ErrorCode
from .errors import ErrorInfo as ErrorInfo
from .errors import InvalidRequest as InvalidRequest
from .errors import InvocationCanceled as InvocationCanceled
from .errors import InvocationTimeout as InvocationTimeout
from .errors import LLMError as LLMError
from .errors import MissingAPIKey as MissingAPIKey
from .errors import ModelNotSupported as ModelNotSupported
from .errors import ProviderError as ProviderError
from .errors import ProviderNotFound as ProviderNotFound
from .errors import ProviderOverloaded as ProviderOverloaded
from .errors import RateLimited as RateLimited
from .errors import StreamingFailed as StreamingFailed
from .errors import ToolExecutionFailed as ToolExecutionFailed
from .invocation._middleware import CallInfo as CallInfo
from .invocation._middleware import Middleware as Middleware
from .invocation._stream import DeltaStream as DeltaStream
from .invocation._stream import InvocationStream as InvocationStream
from .invocation._toolloop import ToolCallsEvent as ToolCallsEvent
from .invocation._toolloop import ToolLoopStream as ToolLoopStream
from .invocation._toolloop import ToolResultsEvent as ToolResultsEvent
from .runtime import UsageError as UsageError
from .tools._core import Tool as Tool
from .tools._core import ToolRegistry as ToolRegistry
from .tools._core import ToolResult as ToolResult
from .tools._decorator import FunctionTool as FunctionTool
from .tools._decorator import tool as tool
from .types import AudioPart as AudioPart
from .types import CacheControl as CacheControl
from .types import ChatRequest as ChatRequest
from .types import ChatResponse as ChatResponse
from .types import Choice as Choice
from .types import CompletionRequest as CompletionRequest
from .types import CompletionResponse as CompletionResponse
from .types import ContentAnnotations as ContentAnnotations
from .types import ContentBlock as ContentBlock
from .types import Feature as Feature
from .types import FinishReason as FinishReason
from .types import ImagePart as ImagePart
from .types import InvocationRequest as InvocationRequest
from .types import InvocationResponse as InvocationResponse
from .types import Message as Message
from .types import ModelInfo as ModelInfo
from .types import ModelOptions as ModelOptions
from .types import NamedToolChoice as NamedToolChoice
from .types import Part as Part
from .types import ReasoningPart as ReasoningPart
from .types import Request as Request
from .types import ResourceLinkPart as ResourceLinkPart
from .types import ResourcePart as ResourcePart
from .types import Response as Response
from .types import ResponseFormat as ResponseFormat
from .types import Role as Role
from .types import StreamAggregator as StreamAggregator
from .types import StreamChunk as StreamChunk
from .types import TextPart as TextPart
from .types import ToolCall as ToolCall
from .types import ToolCallDelta as ToolCallDelta
from .types import ToolChoice as ToolChoice
from .types import ToolSpec as ToolSpec
from .types import Usage as Usage
from .types import assistant as assistant
from .types import developer as developer
from .types import system as system
from .types import tool_result as tool_result
from .types import user as user

__all__ = [
    "AuthenticationError",
    "BudgetAlert",
    "CacheControl",
    "CallInfo",
    "ChatRequest",
    "ChatResponse",
    "Choice",
    "Client",
    "CompletionRequest",
    "CompletionResponse",
    "Config",
    "ConfigProblem",
    "ConfigurationError",
    "CostExceeded",
    "DeltaStream",
    "ErrorCode",
    "ErrorInfo",
    "Feature",
    "FinishReason",
    "FunctionTool",
    "ImagePart",
    "InProcessMCPServer",
    "InvalidRequest",
    "InvocationCanceled",
    "InvocationRequest",
    "InvocationResponse",
    "InvocationStream",
    "InvocationTimeout",
    "LLMError",
    "MCPServerConfig",
    "Message",
    "Middleware",
    "MissingAPIKey",
    "ModelInfo",
    "ModelNotSupported",
    "ModelOptions",
    "NamedToolChoice",
    "Part",
    "ProviderError",
    "ProviderNotFound",
    "ProviderOverloaded",
    "RateLimited",
    "ReasoningPart",
    "Request",
    "Response",
    "ResponseFormat",
    "Role",
    "Secret",
    "StreamAggregator",
    "StreamChunk",
    "StreamingFailed",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallsEvent",
    "ToolChoice",
    "ToolExecutionFailed",
    "ToolLoopStream",
    "ToolRegistry",
    "ToolResult",
    "ToolResultsEvent",
    "ToolSpec",
    "Usage",
    "UsageError",
    "assistant",
    "developer",
    "mcp_server",
    "open_anthropic_client",
    "open_client",
    "open_gemini_client",
    "open_mock_client",
    "open_openai_client",
    "system",
    "tool",
    "tool_result",
    "user",
    "MCPCompletion",
    "MCPElicitation",
    "MCPElicitationAnswer",
    "MCPEvent",
    "MCPProgress",
    "MCPPrompt",
    "MCPPromptArgument",
    "MCPPromptResult",
    "MCPResource",
    "MCPResourceTemplate",
    "MCPRoot",
    "MCPSampling",
    "MCPSamplingRefused",
    "MCPSamplingRequest",
    "MCPAuth",
    "MCPServerHandle",
    "MCPServerInfo",
    "MCPTool",
    "MCPToolAnnotations",
    "PromptsChanged",
    "ResourceUpdated",
    "ResourcesChanged",
    "AudioPart",
    "ContentAnnotations",
    "ContentBlock",
    "ResourceLinkPart",
    "ResourcePart",
]
