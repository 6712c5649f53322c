"""Observability: the audit log, logging that follows the configuration, and optional
OpenTelemetry GenAI spans and metrics (see ``docs/observability.md``).

Nothing here imports OpenTelemetry until a client opens with it installed.
"""

from ._audit import AuditRecord as AuditRecord
from ._logging import JsonFormatter as JsonFormatter
from ._logging import configure_logging as configure_logging

__all__ = ["AuditRecord", "JsonFormatter", "configure_logging"]
