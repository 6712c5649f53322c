"""Usage reports of the ledger: the report types, their SQL and their renderings.

A report is one ``GROUP BY`` query over the ledger table; see `SQLiteLedger.report
<llm_invocation.store.ledger.SQLiteLedger.report>`. This module also holds the SQL both
queries share (the ``WHERE`` clause) and the exact encoding of costs in the table:

* ``cost_pico``: the cost as an integer number of 10**-12 currency units when it is one
  (every cost from a price with at most six decimal places per million tokens, which is
  every first-party price) and fits in 64 bits; summed by SQLite's own ``SUM``;
* ``cost_text``: otherwise the exact decimal text (OpenRouter lists prices such as
  0.041666666666666664 per million tokens); summed exactly by the ``exact_sum`` aggregate;
* both NULL: the cost is unknown.

Sums are therefore exact `~decimal.Decimal` values, and the common case stays in C. If a
``SUM`` of ``cost_pico`` or of a token count would overflow 64 bits (more than about 9.2
million currency units in one group), the query is run again with ``exact_sum`` for those
columns too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    Inexact,
    InvalidOperation,
)
from typing import Any, Final, final

import msgspec

__all__ = [
    "GROUP_KEYS",
    "ExactSum",
    "UsageReport",
    "UsageReportRow",
    "build_report_query",
    "decode_cost",
    "encode_cost",
    "is_overflow",
    "pico_decimal",
    "report_rows",
    "tag_path",
    "where_clause",
]

_EXACT: Final = Context(
    prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[Inexact, InvalidOperation]
)
_PICO: Final = 12
_INT64: Final = 2**63
_MICRO: Final = Decimal("0.000001")
_ROUNDING: Final = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)

GROUP_KEYS: Final = (
    "provider",
    "model",
    "status",
    "error_code",
    "tag:<name>",
    "period:hour",
    "period:day",
    "period:month",
)
"""What a report may group by. Periods are UTC: ``2026-11-22T13:00``, ``2026-11-22``,
``2026-11``."""

_COLUMNS: Final = {
    "provider": "provider",
    "model": "model",
    "status": "status",
    "error_code": "error_code",
}
_PERIODS: Final = {
    "hour": "strftime('%Y-%m-%dT%H:00', at, 'unixepoch')",
    "day": "strftime('%Y-%m-%d', at, 'unixepoch')",
    "month": "strftime('%Y-%m', at, 'unixepoch')",
}


def encode_cost(cost: Decimal | None) -> tuple[int | None, str | None]:
    """Return the ``(cost_pico, cost_text)`` columns of a cost.

    Raises:
        ValueError: the cost is not a finite number.
    """
    if cost is None:
        return None, None
    if not cost.is_finite():
        raise ValueError(f"a cost must be a finite number, not {cost}")
    try:
        scaled = cost.scaleb(_PICO, _EXACT)
        if scaled == scaled.to_integral_value(context=_EXACT):
            pico = int(scaled)
            if -_INT64 <= pico < _INT64:
                return pico, None
    except (Inexact, InvalidOperation):  # pragma: no cover - MAX_PREC holds any finite cost
        pass
    return None, str(cost)


def decode_cost(pico: int | None, text: str | None) -> Decimal | None:
    """Return the cost that `encode_cost` stored."""
    if pico is not None:
        return pico_decimal(pico)
    if text is not None:
        return Decimal(text)
    return None


def pico_decimal(pico: int) -> Decimal:
    """Return an amount of 10**-12 units as a Decimal without trailing zeros."""
    if not pico:
        return Decimal(0)
    exponent = -_PICO
    while exponent < 0 and not pico % 10:
        pico //= 10
        exponent += 1
    return Decimal(pico).scaleb(exponent, _EXACT)


def tag_path(name: str) -> str:
    """Return the JSON path of a tag in the ``tags`` column.

    Raises:
        ValueError: the name is empty or contains a double quote or a backslash (which
            SQLite's JSON paths cannot quote).
    """
    if not name or '"' in name or "\\" in name:
        raise ValueError(f"a tag name to query must be non-empty without '\"' or '\\': {name!r}")
    return f'$."{name}"'


def where_clause(
    *,
    since: float | None,
    until: float | None,
    provider: str | None,
    model: str | None,
    tags: Mapping[str, str] | None,
) -> tuple[str, list[Any]]:
    """Return a ``WHERE`` clause (or ``""``) and its parameters.

    ``since`` is inclusive and ``until`` exclusive; each tag must have the given value.

    Raises:
        ValueError: a tag name cannot be queried (see `tag_path`).
    """
    conditions: list[str] = []
    params: list[Any] = []
    if since is not None:
        conditions.append("at >= ?")
        params.append(since)
    if until is not None:
        conditions.append("at < ?")
        params.append(until)
    if provider is not None:
        conditions.append("provider = ?")
        params.append(provider)
    if model is not None:
        conditions.append("model = ?")
        params.append(model)
    for name, value in (tags or {}).items():
        conditions.append("json_extract(tags, ?) = ?")
        params.extend((tag_path(name), value))
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), params


def _group_expression(key: str) -> tuple[str, list[Any]]:
    if key in _COLUMNS:
        return _COLUMNS[key], []
    kind, _, name = key.partition(":")
    if kind == "tag" and name:
        return "json_extract(tags, ?)", [tag_path(name)]
    if kind == "period" and name in _PERIODS:
        return _PERIODS[name], []
    expected = ", ".join(GROUP_KEYS)
    raise ValueError(f"cannot group a report by {key!r}; expected one of {expected}")


def build_report_query(
    table: str, group_by: Sequence[str], where: str, where_params: Sequence[Any], *, exact: bool
) -> tuple[str, list[Any]]:
    """Return the report's ``GROUP BY`` query and its parameters.

    With ``exact``, ``cost_pico`` and the token counts are summed by ``exact_sum`` instead
    of ``SUM`` (after an integer overflow).

    Raises:
        ValueError: a group key is not one of `GROUP_KEYS`.
    """
    select: list[str] = []
    params: list[Any] = []
    for index, key in enumerate(group_by):
        expression, expression_params = _group_expression(key)
        select.append(f"{expression} AS g{index}")
        params.extend(expression_params)
    # Exactly: sums that overflow 64 bits are summed in Python (counts and costs alike).
    total = "exact_sum" if exact else "SUM"
    select += [
        "COUNT(*)",
        "SUM(status = 'ok')",
        "SUM(status = 'error')",
        "SUM(status = 'cancelled')",
        f"{total}(prompt_tokens)",
        f"{total}(completion_tokens)",
        f"{total}(cache_read_tokens)",
        f"{total}(cache_write_tokens)",
        f"{total}(reasoning_tokens)",
        f"{total}(cost_pico)",
        "exact_sum(cost_text) FILTER (WHERE cost_text IS NOT NULL)",
        "SUM(cost_pico IS NULL AND cost_text IS NULL)",
        "SUM(estimated)",
    ]
    sql = f"SELECT {', '.join(select)} FROM {table}{where}"  # noqa: S608 - no user text in it
    params.extend(where_params)
    if group_by:
        groups = ", ".join(f"g{index}" for index in range(len(group_by)))
        sql += f" GROUP BY {groups} ORDER BY {groups}"
    return sql, params


@final
class ExactSum:
    """The ``exact_sum`` SQLite aggregate: sums integers or decimal texts without rounding.

    It returns the sum as text (SQLite has no decimal type), or NULL when it saw no value.
    """

    def __init__(self) -> None:
        self._total: int | Decimal | None = None

    def step(self, value: int | str | None) -> None:
        if value is None:
            return
        number = value if isinstance(value, int) else Decimal(value)
        self._total = number if self._total is None else self._total + number

    def finalize(self) -> str | None:
        return None if self._total is None else str(self._total)


def _pico_sum(value: int | str | None) -> int:
    # SUM gives an int (or NULL); exact_sum the text of an int.
    return 0 if value is None else int(value)


@final
class UsageReportRow(msgspec.Struct, frozen=True, kw_only=True):
    """One group of a `UsageReport` (or its total).

    Attributes:
        group: the group's values by group key (``{"provider": "openai", ...}``); a tag the
            group's calls did not have is None. Empty for the total.
        calls: the calls in the group.
        ok / error / cancelled: the calls by status.
        prompt_tokens ... reasoning_tokens: the token sums.
        cost: the exact sum of the *known* costs.
        unknown_cost_calls: the calls whose cost is unknown (not in `cost`); when it is not 0,
            `cost` is a lower bound.
        estimated_calls: the calls whose usage was estimated locally.
    """

    group: dict[str, str | None]
    calls: int
    ok: int
    error: int
    cancelled: int
    prompt_tokens: int
    completion_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost: Decimal
    unknown_cost_calls: int
    estimated_calls: int

    def to_dict(self) -> dict[str, Any]:
        """Return the row as JSON-ready builtins; the cost is an exact decimal string."""
        return {
            "group": dict(self.group),
            "calls": self.calls,
            "ok": self.ok,
            "error": self.error,
            "cancelled": self.cancelled,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost": format(self.cost, "f"),
            "unknown_cost_calls": self.unknown_cost_calls,
            "estimated_calls": self.estimated_calls,
        }


_COUNTS: Final = (
    "calls",
    "ok",
    "error",
    "cancelled",
    "prompt_tokens",
    "completion_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


def report_rows(group_by: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[UsageReportRow]:
    """Turn the rows of `build_report_query` into report rows (an empty group is dropped)."""
    width = len(group_by)
    out: list[UsageReportRow] = []
    for row in rows:
        counts = [int(value or 0) for value in row[width : width + len(_COUNTS)]]
        if counts[0] == 0:
            continue
        pico, text, unknown, estimated = row[width + len(_COUNTS) :]
        cost = pico_decimal(_pico_sum(pico))
        if text is not None:
            cost = cost + Decimal(text)
        out.append(
            UsageReportRow(
                group={
                    key: None if value is None else str(value)
                    for key, value in zip(group_by, row, strict=False)
                },
                **dict(zip(_COUNTS, counts, strict=True)),
                cost=cost,
                unknown_cost_calls=int(unknown or 0),
                estimated_calls=int(estimated or 0),
            )
        )
    return out


def _total(rows: Sequence[UsageReportRow]) -> UsageReportRow:
    sums = {name: sum(getattr(row, name) for row in rows) for name in _COUNTS}
    return UsageReportRow(
        group={},
        **sums,
        cost=sum((row.cost for row in rows), Decimal(0)),
        unknown_cost_calls=sum(row.unknown_cost_calls for row in rows),
        estimated_calls=sum(row.estimated_calls for row in rows),
    )


def _money(value: Decimal) -> str:
    return format(value.quantize(_MICRO, rounding=ROUND_HALF_EVEN, context=_ROUNDING), "f")


_TABLE_COLUMNS: Final = (
    ("calls", "calls"),
    ("ok", "ok"),
    ("error", "error"),
    ("cancelled", "cancelled"),
    ("prompt", "prompt_tokens"),
    ("completion", "completion_tokens"),
    ("cache_read", "cache_read_tokens"),
    ("cache_write", "cache_write_tokens"),
    ("reasoning", "reasoning_tokens"),
    ("cost", "cost"),
    ("unknown_cost", "unknown_cost_calls"),
)


@final
class UsageReport(msgspec.Struct, frozen=True, kw_only=True):
    """Usage and cost of the ledger's calls, grouped.

    Attributes:
        group_by: the group keys, in order (see `GROUP_KEYS`).
        since: the start of the reported time range (unix time, inclusive); None: the start.
        until: its end (exclusive); None: now.
        rows: one row per group, ordered by the group values.
        total: the sum of the rows.
    """

    group_by: tuple[str, ...]
    since: float | None
    until: float | None
    rows: tuple[UsageReportRow, ...]
    total: UsageReportRow

    @classmethod
    def build(
        cls,
        group_by: Sequence[str],
        rows: Sequence[UsageReportRow],
        *,
        since: float | None,
        until: float | None,
    ) -> UsageReport:
        """Return a report of the rows, with their total."""
        return cls(
            group_by=tuple(group_by),
            since=since,
            until=until,
            rows=tuple(rows),
            total=_total(rows),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready builtins; costs are exact decimal strings."""
        return {
            "group_by": list(self.group_by),
            "since": self.since,
            "until": self.until,
            "rows": [row.to_dict() for row in self.rows],
            "total": self.total.to_dict(),
        }

    def to_json(self) -> bytes:
        """Return `to_dict` encoded as JSON."""
        return msgspec.json.encode(self.to_dict())

    def to_table(self) -> str:
        """Return an aligned text table: a header, one line per group, and a total line.

        Group values are left-aligned, numbers right-aligned; money has 6 decimal places
        (rounded half to even; `to_json` has the exact values). A missing tag shows as ``-``.
        """
        headers = [*self.group_by, *(title for title, _ in _TABLE_COLUMNS)]
        lines = [self._cells(row) for row in self.rows]
        total = self._cells(self.total)
        if self.group_by:
            total[0] = "TOTAL"
        else:
            # Without groups the one row is the total: show just the total line.
            headers.insert(0, "")
            total.insert(0, "TOTAL")
            lines = []
        widths = [
            max(len(line[i]) for line in [headers, *lines, total]) for i in range(len(headers))
        ]
        first_number = len(headers) - len(_TABLE_COLUMNS)

        def render(cells: Sequence[str]) -> str:
            parts = [
                cell.ljust(width) if index < first_number else cell.rjust(width)
                for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
            ]
            return "  ".join(parts).rstrip()

        rule = "  ".join("-" * width for width in widths)
        body = [*map(render, lines), rule] if lines else []
        return "\n".join([render(headers), rule, *body, render(total)]) + "\n"

    def _cells(self, row: UsageReportRow) -> list[str]:
        cells = [
            ("-" if row.group.get(key) is None else str(row.group[key])) for key in self.group_by
        ]
        for _, name in _TABLE_COLUMNS:
            value: int | Decimal = getattr(row, name)
            cells.append(_money(value) if isinstance(value, Decimal) else str(value))
        return cells


def is_overflow(error: sqlite3.Error) -> bool:
    """Whether SQLite refused an integer ``SUM`` for overflowing 64 bits."""
    return "integer overflow" in str(error)
