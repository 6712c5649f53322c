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

from ._tools_core import Tool as Tool
from ._tools_core import ToolRegistry as ToolRegistry
from ._tools_core import ToolResult as ToolResult
from ._tools_core import result_message as result_message

__all__ = [
    "Tool",
    "ToolRegistry",
    "ToolResult",
    "result_message",
]
