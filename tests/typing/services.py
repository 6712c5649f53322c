"""Static checks: the client and the invoker both satisfy the front's `InvocationService`.

pyright (strict) checks this file; nothing here runs under pytest.
"""

from __future__ import annotations

from llm_invocation import Client
from llm_invocation.actors.websocket import InvocationService
from llm_invocation.invocation import Invoker


def client_is_a_service(client: Client) -> InvocationService:
    return client


def invoker_is_a_service(invoker: Invoker) -> InvocationService:
    return invoker
