"""Logging that follows the configuration, JSON lines, the per-client logger and the audit log.

The audit log has one record per invocation, whatever its end (ok, error, cancelled by the
caller), on ``<client logger>.audit``; its fields are `AuditRecord`'s, documented in
``docs/observability.md`` (checked here against the struct).
"""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import AsyncGenerator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import msgspec
import pytest
import trio

import llm_invocation as llm
from llm_invocation.observability import AuditRecord, JsonFormatter, configure_logging
from llm_invocation.observability import _logging as logging_module
from llm_invocation.testing import HttpError, Scenario, Scenarios, ScriptedToolCall, ScriptedUsage

LIBRARY: Final = "llm_invocation"
PROMPT: Final = "my diary entry for today"
ANSWER: Final = "dear diary"
KEY: Final = "sk-test-AUDITED-0123456789abcdef"
DOCS: Final = Path(__file__).parent.parent / "docs" / "observability.md"


class Records(logging.Handler):
    """Keeps the records it is given."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def library_logger_restored() -> Iterator[None]:
    """Each test starts with the library's logger as Python leaves it, and leaves it so."""
    logger = logging.getLogger(LIBRARY)
    saved = (logger.level, list(logger.handlers), logger.propagate, logging_module._applied)
    logger.setLevel(logging.NOTSET)
    logging_module._applied = None
    yield
    level, handlers, propagate, applied = saved
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate
    logging_module._applied = applied


@pytest.fixture
def audit() -> Iterator[Records]:
    records = Records()
    logger = logging.getLogger(f"{LIBRARY}.audit")
    logger.addHandler(records)
    yield records
    logger.removeHandler(records)


def scripted(*answers: Scenario) -> Scenarios:
    scenarios = Scenarios()
    scenarios.add("mock", *answers)
    return scenarios


@asynccontextmanager
async def mock_client(scenarios: Scenarios, **config: Any) -> AsyncGenerator[llm.Client]:
    retries = {"max_attempts": 3, "initial_delay": 0.001, "max_delay": 0.002}
    config.setdefault("retries", retries)
    async with llm.open_mock_client(scenarios, **config) as client:
        yield client


def request(**fields: Any) -> llm.Request:
    return llm.Request(model="mock", messages=[llm.user(PROMPT)], **fields)


def audited(records: Records) -> list[dict[str, Any]]:
    """The audit records' fields."""
    return [
        {name: getattr(record, name) for name in AuditRecord.__struct_fields__}
        for record in records.records
    ]


# -- levels -------------------------------------------------------------------------------------


async def test_opening_a_client_sets_the_library_log_level_from_the_configuration() -> None:
    async with llm.open_mock_client(logging={"level": "debug"}):
        assert logging.getLogger(LIBRARY).level == logging.DEBUG
    async with llm.open_mock_client(logging={"level": "error"}):
        assert logging.getLogger(LIBRARY).level == logging.ERROR


async def test_llm_log_level_sets_the_library_log_level() -> None:
    config = llm.Config.from_env({"LLM_LOG_LEVEL": "WARNING", "LLM_PROVIDER": "mock"})
    async with llm.open_client(config):
        assert logging.getLogger(LIBRARY).level == logging.WARNING


async def test_a_level_the_application_set_itself_is_left_alone() -> None:
    logging.getLogger(LIBRARY).setLevel(logging.CRITICAL)
    async with llm.open_mock_client(logging={"level": "debug"}):
        assert logging.getLogger(LIBRARY).level == logging.CRITICAL


async def test_the_configured_level_decides_which_records_are_written(audit: Records) -> None:
    scenarios = scripted(Scenario(text=ANSWER), Scenario(text=ANSWER))
    async with llm.open_mock_client(scenarios, logging={"level": "warning"}) as client:
        await client.invoke_sync(request())
    assert audit.records == []
    async with llm.open_mock_client(scenarios, logging={"level": "info"}) as client:
        await client.invoke_sync(request())
    assert len(audit.records) == 1


def test_importing_the_package_installs_no_handler() -> None:
    program = (
        "import logging, llm_invocation\n"
        "print(len(logging.getLogger('llm_invocation').handlers), len(logging.root.handlers))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["0", "0"]


async def test_opening_a_client_installs_no_handler() -> None:
    before = list(logging.getLogger(LIBRARY).handlers), list(logging.root.handlers)
    async with llm.open_mock_client():
        during = list(logging.getLogger(LIBRARY).handlers), list(logging.root.handlers)
    assert during == before


# -- handlers and formats -----------------------------------------------------------------------


def test_configure_logging_in_json_writes_one_object_per_line_with_stable_fields() -> None:
    stream = io.StringIO()
    configure_logging(level="info", format="json", stream=stream)
    log = logging.getLogger(f"{LIBRARY}.example")
    log.info("hello %s", "world", extra={"provider": "openai", "attempt": 2})
    log.debug("not written at info")
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert list(record)[:4] == ["ts", "level", "logger", "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"])
    assert record["level"] == "info"
    assert record["logger"] == f"{LIBRARY}.example"
    assert record["message"] == "hello world"
    assert (record["provider"], record["attempt"]) == ("openai", 2)


def test_configure_logging_follows_the_configurations_level_and_format() -> None:
    stream = io.StringIO()
    config = llm.Config.from_env({"LLM_LOG_LEVEL": "error", "LLM_LOG_FORMAT": "json"})
    configure_logging(config, stream=stream)
    log = logging.getLogger(f"{LIBRARY}.example")
    log.warning("below the level")
    log.error("at the level")
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["message"] == "at the level"


def test_the_text_format_is_one_readable_line() -> None:
    stream = io.StringIO()
    configure_logging(level="warning", format="text", stream=stream)
    logging.getLogger(f"{LIBRARY}.example").warning("careful")
    (line,) = stream.getvalue().splitlines()
    assert line.endswith(" WARNING llm_invocation.example: careful")


def test_configuring_again_replaces_the_handler_instead_of_adding_one() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(level="info", stream=first)
    configure_logging(level="info", stream=second)
    logging.getLogger(LIBRARY).info("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1


async def test_a_level_given_to_configure_logging_is_kept_by_clients_opened_later() -> None:
    configure_logging(level="error", stream=io.StringIO())
    async with llm.open_mock_client(logging={"level": "debug"}):
        assert logging.getLogger(LIBRARY).level == logging.ERROR


def test_json_lines_scrub_key_shaped_strings_and_write_odd_values_as_text() -> None:
    stream = io.StringIO()
    configure_logging(level="info", format="json", stream=stream)
    logging.getLogger(LIBRARY).info("key %s", KEY, extra={"thing": object(), "when": (1, 2)})
    record = json.loads(stream.getvalue())
    assert KEY not in stream.getvalue()
    assert record["thing"].startswith("<object object")
    assert record["when"] == [1, 2]


def test_an_unknown_level_or_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(level="chatty", stream=io.StringIO())
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging(level="info", format="xml", stream=io.StringIO())  # pyright: ignore[reportArgumentType]


# -- the command line ---------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str]:
    from llm_invocation.cli import main

    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out=out, err=err), err.getvalue()


def test_the_command_line_logs_at_warning_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_LOG_LEVEL", raising=False)
    monkeypatch.setenv("LLM_PROVIDER", "mock")
    assert run_cli("config", "check")[0] == 0
    assert logging.getLogger(LIBRARY).level == logging.WARNING


def test_the_command_lines_log_level_option_sets_the_level(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLM_LOG_LEVEL", "error")
    monkeypatch.setenv("LLM_PROVIDER", "mock")
    assert run_cli("--log-level", "debug", "config", "check")[0] == 0
    assert logging.getLogger(LIBRARY).level == logging.DEBUG


def test_the_command_line_follows_llm_log_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_LOG_LEVEL", "ERROR")
    monkeypatch.setenv("LLM_PROVIDER", "mock")
    assert run_cli("config", "check")[0] == 0
    assert logging.getLogger(LIBRARY).level == logging.ERROR


def test_the_command_line_writes_json_lines_when_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLM_LOG_FORMAT", "json")
    monkeypatch.setenv("LLM_PROVIDER", "mock")
    assert run_cli("config", "check")[0] == 0
    handlers = logging.getLogger(LIBRARY).handlers
    assert handlers
    assert all(isinstance(handler.formatter, JsonFormatter) for handler in handlers)


# -- the client's logger ------------------------------------------------------------------------


async def test_a_clients_logger_gets_its_audit_records_and_its_warnings() -> None:
    mine = logging.getLogger("app.llm")
    records = Records()
    mine.addHandler(records)
    mine.setLevel(logging.INFO)
    try:
        config = llm.Config.unlimited(
            provider="mock",
            model="mock",
            retries={"max_attempts": 1},
            providers={"mock": {"fallback": ["nowhere:model"]}},
        )
        async with llm.open_client(
            config, scenarios=scripted(Scenario(text=ANSWER)), logger=mine
        ) as client:
            assert client.logger is mine
            await client.invoke_sync(request())
    finally:
        mine.removeHandler(records)
        mine.setLevel(logging.NOTSET)
    names = [record.name for record in records.records]
    assert names == ["app.llm.invocation", "app.llm.audit"]
    assert "fallback nowhere:model skipped" in records.records[0].getMessage()


async def test_the_default_client_logger_is_the_librarys() -> None:
    async with llm.open_mock_client() as client:
        assert client.logger is logging.getLogger(LIBRARY)


async def test_a_logger_that_is_not_one_is_refused() -> None:
    with pytest.raises(TypeError, match=r"logging\.Logger"):
        async with llm.open_client(llm.Config.unlimited(provider="mock"), logger="app"):  # pyright: ignore[reportArgumentType]
            pass


# -- the audit log ------------------------------------------------------------------------------


async def test_a_successful_invocation_has_one_audit_record(audit: Records) -> None:
    usage = ScriptedUsage(prompt_tokens=11, completion_tokens=4)
    async with mock_client(scripted(Scenario(text=ANSWER, usage=usage))) as client:
        response = await client.invoke_sync(request(metadata={"team": "search", "n": 3}))
    (record,) = audited(audit)
    assert audit.records[0].levelno == logging.INFO
    assert audit.records[0].name == "llm_invocation.audit"
    assert record["event"] == "invocation"
    assert re.fullmatch(r"[0-9a-f]{24}", record["id"])
    assert (record["provider"], record["model"], record["operation"]) == ("mock", "mock", "chat")
    assert (record["status"], record["error_code"]) == ("ok", None)
    assert (record["input_tokens"], record["output_tokens"]) == (11, 4)
    assert record["response_id"] == response.id
    assert record["finish_reason"] == "stop"
    assert (record["attempts"], record["retries"], record["fallbacks"]) == (1, 0, 0)
    assert record["attempted"] == ["mock:mock"]
    assert record["tags"] == {"team": "search", "n": "3"}
    assert record["duration"] >= 0
    assert record["stream"] is True
    assert (record["input"], record["output"], record["token"]) == (None, None, None)


class _Ids(llm.Middleware):
    def __init__(self) -> None:
        self.ids: list[str] = []

    async def before_attempt(self, call: llm.CallInfo) -> None:
        self.ids.append(call.id)


async def test_the_hooks_and_the_audit_record_name_an_invocation_by_one_id(
    audit: Records,
) -> None:
    hooks = _Ids()
    async with mock_client(scripted(Scenario(text=ANSWER), Scenario(text=ANSWER))) as client:
        client.add_middleware(hooks)
        await client.invoke_sync(request())
        await client.invoke_sync(request(stream=False))
    assert [record["id"] for record in audited(audit)] == hooks.ids
    assert len(set(hooks.ids)) == 2


async def test_a_failed_invocation_is_audited_with_its_error_code(audit: Records) -> None:
    async with mock_client(scripted(Scenario(failure=HttpError(status=400)))) as client:
        with pytest.raises(llm.InvalidRequest):
            await client.invoke_sync(request())
    (record,) = audited(audit)
    assert (record["status"], record["error_code"]) == ("error", "invalid_request")


async def test_a_retried_invocation_is_audited_once_with_its_attempts(audit: Records) -> None:
    scenarios = scripted(Scenario(failure=HttpError(status=503)), Scenario(text=ANSWER))
    async with mock_client(scenarios) as client:
        await client.invoke_sync(request())
    (record,) = audited(audit)
    assert (record["status"], record["attempts"], record["retries"]) == ("ok", 2, 1)


async def test_an_invocation_the_caller_cancels_is_audited_as_cancelled(audit: Records) -> None:
    scenarios = scripted(Scenario(text="a" * 50, chunk_chars=1, interval=0.05))
    async with mock_client(scenarios) as client:
        with trio.CancelScope() as scope:
            async with client.invoke(request()) as stream:
                async for _ in stream:
                    scope.cancel()
                    await trio.lowlevel.checkpoint()
    (record,) = audited(audit)
    assert (record["status"], record["error_code"]) == ("cancelled", None)


async def test_an_invocation_left_early_is_audited_as_cancelled(audit: Records) -> None:
    scenarios = scripted(Scenario(text="a" * 50, chunk_chars=1, interval=0.05))
    async with mock_client(scenarios) as client, client.invoke(request()) as stream:
        async for _ in stream:
            break
    (record,) = audited(audit)
    assert record["status"] == "cancelled"


async def test_a_cached_answer_is_audited_as_cached_at_no_cost(audit: Records) -> None:
    async with mock_client(scripted(Scenario(text=ANSWER))) as client:
        await client.invoke_sync(request(cache=True))
        await client.invoke_sync(request(cache=True))
    first, second = audited(audit)
    assert (first["cached"], first["attempts"]) == (False, 1)
    assert (second["cached"], second["attempts"], second["cost"]) == (True, 0, 0)


async def test_the_websocket_token_name_is_audited(audit: Records) -> None:
    async with mock_client(scripted(Scenario(text=ANSWER))) as client:
        await client.invoke_sync(request(metadata={"token": "ci-bot"}))
    (record,) = audited(audit)
    assert record["token"] == "ci-bot"


async def test_each_step_of_a_tool_loop_is_audited(audit: Records) -> None:
    @llm.tool
    def now() -> str:
        """The time."""
        return "noon"

    scenarios = scripted(
        Scenario(tool_calls=[ScriptedToolCall(name="now", arguments={})]),
        Scenario(text="It is noon."),
    )
    async with mock_client(scenarios) as client:
        client.register_tool(now)
        async with client.invoke(request(), tool_mode="auto") as loop:
            await loop.aggregate()
    assert [record["step"] for record in audited(audit)] == [0, 1]


async def test_no_prompt_answer_or_key_is_audited_by_default(audit: Records) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    audit_logger = logging.getLogger(f"{LIBRARY}.audit")
    audit_logger.addHandler(handler)
    try:
        async with mock_client(scripted(Scenario(text=ANSWER))) as client:
            await client.invoke_sync(request(metadata={"note": KEY}))
    finally:
        audit_logger.removeHandler(handler)
    line = stream.getvalue()
    assert json.loads(line)["status"] == "ok"
    assert PROMPT not in line and ANSWER not in line and KEY not in line


async def test_captured_content_puts_the_prompt_and_answer_in_the_audit_record(
    audit: Records,
) -> None:
    scenarios = scripted(Scenario(text=ANSWER))
    async with mock_client(scenarios, logging={"capture_content": True}) as client:
        await client.invoke_sync(llm.Request(model="mock", messages=[llm.user(f"{PROMPT} {KEY}")]))
    (record,) = audited(audit)
    assert record["output"] == ANSWER
    (message,) = record["input"]
    assert PROMPT in message["parts"][0]["content"]
    assert KEY not in json.dumps(record, default=str)


async def test_an_audit_json_line_has_exactly_the_schemas_fields(audit: Records) -> None:
    stream = io.StringIO()
    configure_logging(level="info", format="json", stream=stream)
    async with mock_client(scripted(Scenario(text=ANSWER))) as client:
        await client.invoke_sync(request())
    (line,) = [json.loads(x) for x in stream.getvalue().splitlines() if '"invocation"' in x]
    assert set(line) == {"ts", "level", "logger", "message", *AuditRecord.__struct_fields__}
    assert line["logger"] == "llm_invocation.audit"
    assert isinstance(line["cost"], str | None)


# -- the schema, documented ---------------------------------------------------------------------


def _json_type(t: msgspec.inspect.Type) -> str:
    match t:
        case msgspec.inspect.UnionType(types=types):
            return " or ".join(_json_type(x) for x in types)
        case msgspec.inspect.NoneType():
            return "null"
        case msgspec.inspect.StrType() | msgspec.inspect.LiteralType():
            return "string"
        case msgspec.inspect.IntType():
            return "integer"
        case msgspec.inspect.FloatType():
            return "number"
        case msgspec.inspect.BoolType():
            return "boolean"
        case msgspec.inspect.DecimalType():
            return "decimal string"
        case msgspec.inspect.ListType():
            return "array"
        case msgspec.inspect.DictType():
            return "object"
        case _:
            raise AssertionError(f"no JSON name for {t}")


def audit_schema_rows() -> list[str]:
    """The documentation's table of `AuditRecord`, rendered from the struct."""
    info = msgspec.inspect.type_info(AuditRecord)
    assert isinstance(info, msgspec.inspect.StructType)
    return [f"| `{field.name}` | {_json_type(field.type)} |" for field in info.fields]


def test_the_documented_audit_schema_is_the_structs() -> None:
    text = DOCS.read_text()
    table = text.split("<!-- audit-schema -->")[1].split("<!-- /audit-schema -->")[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    documented = [" | ".join(row.split(" | ")[:2]) + " |" for row in rows]
    assert documented == audit_schema_rows()
    assert all(row.count(" | ") == 2 and len(row.split(" | ")[2]) > 5 for row in rows)
