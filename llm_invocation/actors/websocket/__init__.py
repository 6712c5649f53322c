"""The WebSocket front: streaming invocations for remote clients, and a chat page."""

from ._front import SUBPROTOCOL as SUBPROTOCOL
from ._front import BatchFrame as BatchFrame
from ._front import CancelFrame as CancelFrame
from ._front import ChunkFrame as ChunkFrame
from ._front import ChunksFrame as ChunksFrame
from ._front import ClientFrame as ClientFrame
from ._front import DoneFrame as DoneFrame
from ._front import ErrorFrame as ErrorFrame
from ._front import FrontStatistics as FrontStatistics
from ._front import InvocationService as InvocationService
from ._front import InvokeFrame as InvokeFrame
from ._front import PingFrame as PingFrame
from ._front import PongFrame as PongFrame
from ._front import Relayable as Relayable
from ._front import ServerFrame as ServerFrame
from ._front import ServerMessage as ServerMessage
from ._front import ToolCallFrame as ToolCallFrame
from ._front import ToolResultFrame as ToolResultFrame
from ._front import WebSocketFront as WebSocketFront
from ._front import decode_server_message as decode_server_message
from ._front import serve_websocket_front as serve_websocket_front

__all__ = [
    "SUBPROTOCOL",
    "BatchFrame",
    "CancelFrame",
    "ChunkFrame",
    "ChunksFrame",
    "ClientFrame",
    "DoneFrame",
    "ErrorFrame",
    "FrontStatistics",
    "InvocationService",
    "InvokeFrame",
    "PingFrame",
    "PongFrame",
    "Relayable",
    "ServerFrame",
    "ServerMessage",
    "ToolCallFrame",
    "ToolResultFrame",
    "WebSocketFront",
    "decode_server_message",
    "serve_websocket_front",
]
