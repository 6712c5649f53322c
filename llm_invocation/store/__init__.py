"""Shared-state backends: the durable SQLite usage ledger (and, later, rate-limit and budget
stores).

`llm_invocation.store.ledger` records one `LedgerEntry` per settled invocation in SQLite and
reports usage and cost grouped by provider, model, tag or period.
"""

from .ledger import LedgerEntry as LedgerEntry
from .ledger import LedgerError as LedgerError
from .ledger import LedgerStatistics as LedgerStatistics
from .ledger import SQLiteLedger as SQLiteLedger
from .ledger import UsageReport as UsageReport
from .ledger import UsageReportRow as UsageReportRow
from .ledger import open_ledger as open_ledger

__all__ = [
    "LedgerEntry",
    "LedgerError",
    "LedgerStatistics",
    "SQLiteLedger",
    "UsageReport",
    "UsageReportRow",
    "open_ledger",
]
