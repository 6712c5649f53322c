"""MCP servers as supervised actors: one `MCPConnection` per server, its tools in the registry."""

from ._auth import MCPAuth as MCPAuth
from ._handle import MCPListener as MCPListener
from ._handle import MCPServerHandle as MCPServerHandle
from ._host import ElicitationCallback as ElicitationCallback
from ._host import MCPElicitation as MCPElicitation
from ._host import MCPElicitationAnswer as MCPElicitationAnswer
from ._host import MCPLogLevel as MCPLogLevel
from ._host import MCPProgress as MCPProgress
from ._host import MCPRoot as MCPRoot
from ._host import MCPSampling as MCPSampling
from ._host import MCPSamplingRefused as MCPSamplingRefused
from ._host import MCPSamplingRequest as MCPSamplingRequest
from ._host import ProgressCallback as ProgressCallback
from ._host import SamplingPolicy as SamplingPolicy
from ._host import mcp_root as mcp_root
from ._manager import MCP_BACKOFF as MCP_BACKOFF
from ._manager import MCP_MAX_RESTARTS as MCP_MAX_RESTARTS
from ._manager import MCP_RESTART_WINDOW as MCP_RESTART_WINDOW
from ._manager import MIN_CONNECT_TIMEOUT as MIN_CONNECT_TIMEOUT
from ._manager import PING_INTERVAL as PING_INTERVAL
from ._manager import CallTool as CallTool
from ._manager import ListServerTools as ListServerTools
from ._manager import MCPConnection as MCPConnection
from ._manager import MCPMsg as MCPMsg
from ._manager import MCPServerInfo as MCPServerInfo
from ._manager import MCPTool as MCPTool
from ._manager import ServerInfo as ServerInfo
from ._manager import local_tool_name as local_tool_name
from ._manager import mcp_child_spec as mcp_child_spec
from ._manager import mcp_supervisor_spec as mcp_supervisor_spec
from ._models import MCPCompletion as MCPCompletion
from ._models import MCPEvent as MCPEvent
from ._models import MCPPrompt as MCPPrompt
from ._models import MCPPromptArgument as MCPPromptArgument
from ._models import MCPPromptResult as MCPPromptResult
from ._models import MCPResource as MCPResource
from ._models import MCPResourceTemplate as MCPResourceTemplate
from ._models import MCPToolAnnotations as MCPToolAnnotations
from ._models import PromptsChanged as PromptsChanged
from ._models import ResourcesChanged as ResourcesChanged
from ._models import ResourceUpdated as ResourceUpdated
from ._models import TaskSupport as TaskSupport
from ._servers import DEFAULT_MCP_PATH as DEFAULT_MCP_PATH
from ._servers import InProcessMCPServer as InProcessMCPServer
from ._servers import MCPServerLike as MCPServerLike
from ._servers import ServerSpec as ServerSpec
from ._servers import mcp_server as mcp_server
from ._servers import server_url as server_url

__all__ = [
    "DEFAULT_MCP_PATH",
    "MCP_BACKOFF",
    "MCP_MAX_RESTARTS",
    "MCP_RESTART_WINDOW",
    "MIN_CONNECT_TIMEOUT",
    "PING_INTERVAL",
    "CallTool",
    "ElicitationCallback",
    "InProcessMCPServer",
    "ListServerTools",
    "MCPCompletion",
    "MCPConnection",
    "MCPElicitation",
    "MCPElicitationAnswer",
    "MCPEvent",
    "MCPListener",
    "MCPLogLevel",
    "MCPMsg",
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
    "MCPServerHandle",
    "MCPAuth",
    "MCPServerInfo",
    "MCPServerLike",
    "MCPTool",
    "MCPToolAnnotations",
    "ProgressCallback",
    "PromptsChanged",
    "ResourceUpdated",
    "ResourcesChanged",
    "ServerInfo",
    "SamplingPolicy",
    "ServerSpec",
    "TaskSupport",
    "local_tool_name",
    "mcp_child_spec",
    "mcp_root",
    "mcp_server",
    "mcp_supervisor_spec",
    "server_url",
]
