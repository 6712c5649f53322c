"""The configuration: `Config` and its sections, from keywords, ``LLM_*`` variables and files."""

from ._sections import MCPRootConfig as MCPRootConfig
from ._sections import MCPSamplingConfig as MCPSamplingConfig
from ._settings import BudgetConfig as BudgetConfig
from ._settings import Config as Config
from ._settings import CostConfig as CostConfig
from ._settings import DefaultsConfig as DefaultsConfig
from ._settings import LoggingConfig as LoggingConfig
from ._settings import MCPConfig as MCPConfig
from ._settings import MCPServerConfig as MCPServerConfig
from ._settings import PriceOverride as PriceOverride
from ._settings import ProviderConfig as ProviderConfig
from ._settings import ProviderKind as ProviderKind
from ._settings import RateLimitConfig as RateLimitConfig
from ._settings import RetryConfig as RetryConfig
from ._settings import TimeoutConfig as TimeoutConfig
from ._settings import ToolsConfig as ToolsConfig
from ._settings import WebSocketConfig as WebSocketConfig
from ._settings import format_duration as format_duration
from ._settings import parse_duration as parse_duration

__all__ = [
    "BudgetConfig",
    "Config",
    "CostConfig",
    "DefaultsConfig",
    "LoggingConfig",
    "MCPConfig",
    "MCPRootConfig",
    "MCPSamplingConfig",
    "MCPServerConfig",
    "PriceOverride",
    "ProviderConfig",
    "ProviderKind",
    "RateLimitConfig",
    "RetryConfig",
    "TimeoutConfig",
    "ToolsConfig",
    "WebSocketConfig",
    "format_duration",
    "parse_duration",
]
