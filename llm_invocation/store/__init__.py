"""Shared-state backends: rate-limit and budget stores (in memory, or Redis for several
processes), the response cache, and the durable SQLite usage ledger with its batching writer.

`llm_invocation.store.ledger` records one `LedgerEntry` per settled invocation in SQLite and
reports usage and cost grouped by provider, model, tag or period.
"""

from .ledger import LedgerEntry as LedgerEntry
from .ledger import LedgerError as LedgerError
from .ledger import LedgerStatistics as LedgerStatistics
from .ledger import LedgerWriter as LedgerWriter
from .ledger import SQLiteLedger as SQLiteLedger
from .ledger import UsageReport as UsageReport
from .ledger import UsageReportRow as UsageReportRow
from .ledger import WriterStatistics as WriterStatistics
from .ledger import open_ledger as open_ledger
from .ledger import open_ledger_writer as open_ledger_writer

__all__ = [
    "LedgerEntry",
    "LedgerError",
    "LedgerStatistics",
    "LedgerWriter",
    "SQLiteLedger",
    "UsageReport",
    "UsageReportRow",
    "WriterStatistics",
    "open_ledger",
    "open_ledger_writer",
]
