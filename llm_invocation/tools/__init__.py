"""Tools the model can call: the protocol, the ``@tool`` decorator, results and the registry.

::

    @tool
    async def weather(city: str, unit: Literal["C", "F"] = "C") -> dict[str, float]:
        \"\"\"Current temperature in a city.\"\"\"
        ...

    client.register_tool(weather)

The JSON schema comes from the type hints, the description from the docstring, and the
model's arguments are validated and converted before the function runs; a bad argument comes
back to the model as an error result it can correct.
"""

from ._core import MAX_RESULT_CHARS as MAX_RESULT_CHARS
from ._core import Tool as Tool
from ._core import ToolContext as ToolContext
from ._core import ToolErrorCode as ToolErrorCode
from ._core import ToolRegistry as ToolRegistry
from ._core import ToolResult as ToolResult
from ._core import error_result as error_result
from ._core import result_message as result_message
from ._core import to_result as to_result
from ._decorator import FunctionTool as FunctionTool
from ._decorator import tool as tool
from ._sandbox import SandboxLimits as SandboxLimits

__all__ = [
    "MAX_RESULT_CHARS",
    "FunctionTool",
    "SandboxLimits",
    "Tool",
    "ToolContext",
    "ToolErrorCode",
    "ToolRegistry",
    "ToolResult",
    "error_result",
    "result_message",
    "to_result",
    "tool",
]
