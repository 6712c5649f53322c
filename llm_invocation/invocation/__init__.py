"""One invocation from request to settled result: the `Invoker`, its streams and the tool loop.

Everything that runs an invocation (the client facade, the tool loop, the WebSocket front)
goes through the `Invoker`: cache, admission, attempts, retries, fallback, settlement and the
usage record, for streamed and non-streamed calls alike; and the client's `Middleware`
around each invocation and attempt.
"""

from ._governance import Governance as Governance
from ._invoker import InvocationStatistics as InvocationStatistics
from ._invoker import Invoker as Invoker
from ._middleware import CallInfo as CallInfo
from ._middleware import Middleware as Middleware
from ._run import RetryPolicy as RetryPolicy
from ._stream import DeltaStream as DeltaStream
from ._stream import InvocationStream as InvocationStream
from ._toolloop import LoopItem as LoopItem
from ._toolloop import ToolCallsEvent as ToolCallsEvent
from ._toolloop import ToolLoopStream as ToolLoopStream
from ._toolloop import ToolResultsEvent as ToolResultsEvent

__all__ = [
    "CallInfo",
    "DeltaStream",
    "Governance",
    "InvocationStatistics",
    "InvocationStream",
    "Invoker",
    "LoopItem",
    "Middleware",
    "RetryPolicy",
    "ToolCallsEvent",
    "ToolLoopStream",
    "ToolResultsEvent",
]
