"""A generic actor runtime on trio, with OTP-style supervision. It knows nothing about LLMs.

Actors own one concern each and talk in msgspec messages over bounded memory channels::

    class Get(Call[int], frozen=True, kw_only=True):
        pass

    class Counter(Actor[Get]):
        def __init__(self) -> None:
            self.n = 0

        async def handle(self, msg: Get, ctx: Context) -> int:
            self.n += 1
            return self.n

    spec = SupervisorSpec(children=[ChildSpec.actor("counter", Counter)])
    async with open_runtime(spec) as runtime:
        counter = runtime.ref("counter", Counter)
        n = await counter.call(Get())          # typed: int

See ``_errors`` for the exception hierarchy.
"""

from ._actor import Actor as Actor
from ._actor import Context as Context
from ._cell import ActorState as ActorState
from ._cell import ActorStatistics as ActorStatistics
from ._cell import Loan as Loan
from ._envelope import ReplyHandle as ReplyHandle
from ._envelope import StreamReceiver as StreamReceiver
from ._envelope import StreamSink as StreamSink
from ._errors import ActorCrashed as ActorCrashed
from ._errors import ActorDead as ActorDead
from ._errors import ActorError as ActorError
from ._errors import CallCycle as CallCycle
from ._errors import MailboxFull as MailboxFull
from ._errors import MaxRestartsExceeded as MaxRestartsExceeded
from ._errors import ReplyError as ReplyError
from ._errors import StreamOverrun as StreamOverrun
from ._errors import UsageError as UsageError
from ._messages import Call as Call
from ._messages import Msg as Msg
from ._messages import Stream as Stream
from ._ref import ActorRef as ActorRef
from ._ref import StreamContext as StreamContext
from ._runtime import Runtime as Runtime
from ._runtime import RuntimeStatistics as RuntimeStatistics
from ._runtime import open_runtime as open_runtime
from ._runtime import serve_runtime as serve_runtime
from ._specs import Backoff as Backoff
from ._specs import ChildKind as ChildKind
from ._specs import ChildSpec as ChildSpec
from ._specs import RestartType as RestartType
from ._specs import Strategy as Strategy
from ._specs import SupervisorSpec as SupervisorSpec
from ._supervisor import SupervisorStatistics as SupervisorStatistics

__all__ = [
    "Actor",
    "ActorCrashed",
    "ActorDead",
    "ActorError",
    "ActorRef",
    "ActorState",
    "ActorStatistics",
    "Backoff",
    "Call",
    "CallCycle",
    "ChildKind",
    "ChildSpec",
    "Context",
    "Loan",
    "MailboxFull",
    "MaxRestartsExceeded",
    "Msg",
    "ReplyError",
    "ReplyHandle",
    "RestartType",
    "Runtime",
    "RuntimeStatistics",
    "Strategy",
    "Stream",
    "StreamContext",
    "StreamOverrun",
    "StreamReceiver",
    "StreamSink",
    "SupervisorSpec",
    "SupervisorStatistics",
    "UsageError",
    "open_runtime",
    "serve_runtime",
]
