"""The ``@tool`` decorator: schemas from type hints, argument conversion, and results."""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import threading
from typing import Annotated, Any, Literal, TypedDict

import msgspec
import pytest
import trio

from llm_invocation.errors import InvalidRequest, ToolExecutionFailed
from llm_invocation.tools import (
    MAX_RESULT_CHARS,
    FunctionTool,
    Tool,
    ToolContext,
    ToolRegistry,
    ToolResult,
    error_result,
    to_result,
    tool,
)
from llm_invocation.types import ImagePart, TextPart, ToolCall, ToolSpec

# -- types users write ---------------------------------------------------------------------


class Point(msgspec.Struct):
    x: int
    y: int = 0


@dataclasses.dataclass
class Address:
    street: str
    city: str


class Filters(TypedDict):
    tag: str
    limit: int


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Opaque:
    """A class msgspec cannot describe."""


# -- tools ---------------------------------------------------------------------------------


@tool
def add(a: int, b: int = 2) -> int:
    """Add two numbers.

    The sum is exact for integers.

    Args:
        a: the first number,
            which may be negative.
        b (int): the second number.

    Returns:
        The sum.

    Raises:
        OverflowError: never.
    """
    return a + b


@tool
async def shout(text: str) -> str:
    """Upper-case some text."""
    await trio.sleep(0)
    return text.upper()


@tool
def everything(
    point: Point,
    address: Address,
    filters: Filters,
    color: Color,
    unit: Literal["C", "F"],
    limit: Annotated[int, msgspec.Meta(ge=1, le=10, description="how many")],
    tags: list[str],
    pair: tuple[int, str],
    ids: set[int],
    weights: dict[str, float],
    note: str | None = None,
    scale: float = 1.0,
    verbose: bool = False,
    extra: list[int] = [1, 2],  # noqa: B006 - a mutable default is what users write
) -> dict[str, Any]:
    """Echo the converted arguments."""
    return {
        "point": point,
        "address": address,
        "filters": filters,
        "color": color,
        "unit": unit,
        "limit": limit,
        "tags": tags,
        "pair": pair,
        "ids": ids,
        "weights": weights,
        "note": note,
        "scale": scale,
        "verbose": verbose,
        "extra": extra,
    }


GOOD = {
    "point": {"x": 1},
    "address": {"street": "Main St", "city": "Springfield"},
    "filters": {"tag": "news", "limit": 3},
    "color": "red",
    "unit": "C",
    "limit": 5,
    "tags": ["a", "b"],
    "pair": [1, "one"],
    "ids": [1, 2, 2],
    "weights": {"w": 0.5},
}


def props(t: FunctionTool[..., Any]) -> dict[str, Any]:
    return t.parameters["properties"]


# -- the schema ----------------------------------------------------------------------------


def test_a_decorated_function_is_a_tool_named_after_the_function() -> None:
    assert isinstance(add, FunctionTool)
    assert isinstance(add, Tool)
    assert add.name == "add"


def test_the_description_is_the_docstring_prose_without_its_sections() -> None:
    assert add.description == "Add two numbers.\n\nThe sum is exact for integers."


def test_the_parameters_are_an_object_schema_with_required_and_no_extra_fields() -> None:
    assert add.parameters == {
        "type": "object",
        "properties": {
            "a": {"description": "the first number, which may be negative.", "type": "integer"},
            "b": {"description": "the second number.", "type": "integer", "default": 2},
        },
        "required": ["a"],
        "additionalProperties": False,
    }


def test_a_function_without_parameters_has_an_empty_object_schema() -> None:
    @tool
    def now() -> str:
        return "noon"

    assert now.parameters == {"type": "object", "properties": {}, "additionalProperties": False}
    assert now.description == ""


def test_optional_parameters_accept_null_and_are_not_required() -> None:
    schema = props(everything)["note"]
    assert schema == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert "note" not in everything.parameters["required"]


def test_collections_have_their_item_types() -> None:
    p = props(everything)
    assert p["tags"] == {"type": "array", "items": {"type": "string"}}
    assert p["pair"]["prefixItems"] == [{"type": "integer"}, {"type": "string"}]
    assert p["ids"] == {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}
    assert p["weights"] == {"type": "object", "additionalProperties": {"type": "number"}}


def test_nested_structs_dataclasses_and_typed_dicts_are_defs_beside_the_root() -> None:
    params = everything.parameters
    assert props(everything)["point"] == {"$ref": "#/$defs/Point"}
    assert props(everything)["address"] == {"$ref": "#/$defs/Address"}
    assert props(everything)["filters"] == {"$ref": "#/$defs/Filters"}
    defs = params["$defs"]
    assert defs["Point"]["properties"] == {
        "x": {"type": "integer"},
        "y": {"type": "integer", "default": 0},
    }
    assert defs["Point"]["required"] == ["x"]
    assert defs["Address"]["required"] == ["street", "city"]
    assert defs["Filters"]["properties"]["limit"] == {"type": "integer"}
    assert "everything_arguments" not in defs  # the root is the object itself


def test_enums_and_literals_list_their_values() -> None:
    assert everything.parameters["$defs"]["Color"]["enum"] == ["green", "red"]
    assert props(everything)["color"] == {"$ref": "#/$defs/Color"}
    assert props(everything)["unit"] == {"enum": ["C", "F"]}


def test_annotated_constraints_and_descriptions_are_in_the_schema() -> None:
    assert props(everything)["limit"] == {
        "description": "how many",
        "type": "integer",
        "minimum": 1,
        "maximum": 10,
    }


def test_a_metadata_description_wins_over_the_docstring() -> None:
    @tool
    def search(query: Annotated[str, msgspec.Meta(description="from Meta")]) -> str:
        """Search.

        Args:
            query: from the docstring.
        """
        return query

    assert props(search)["query"]["description"] == "from Meta"


def test_defaults_are_in_the_schema_including_mutable_ones() -> None:
    p = props(everything)
    assert p["scale"]["default"] == 1.0
    assert p["verbose"]["default"] is False
    assert p["extra"]["default"] == [1, 2]
    assert set(everything.parameters["required"]) == {
        "point",
        "address",
        "filters",
        "color",
        "unit",
        "limit",
        "tags",
        "pair",
        "ids",
        "weights",
    }


def test_name_and_description_can_be_overridden() -> None:
    @tool(name="sum-two", description="Adds.", timeout=3.0, strict=True)
    def adder(a: int) -> int:
        """Ignored."""
        return a

    assert adder.name == "sum-two"
    assert adder.description == "Adds."
    assert adder.timeout == 3.0
    assert adder.strict is True


def test_spec_is_the_tool_as_sent_to_the_provider() -> None:
    @tool(strict=True)
    def strict_add(a: int) -> int:
        return a

    assert strict_add.spec() == ToolSpec(
        name="strict_add", description="", parameters=strict_add.parameters, strict=True
    )


def test_the_registry_offers_a_tools_strict_option() -> None:
    @tool(strict=False)
    def lenient(a: int) -> int:
        return a

    registry = ToolRegistry([lenient, add])
    assert [spec.strict for spec in registry.specs()] == [None, False]


def test_a_tool_context_parameter_is_injected_not_described() -> None:
    @tool
    def traced(query: str, ctx: ToolContext) -> str:
        return f"{ctx.call_id}:{query}"

    assert set(props(traced)) == {"query"}
    assert traced.parameters["required"] == ["query"]


async def test_the_tool_context_carries_the_call() -> None:
    @tool
    async def traced(query: str, ctx: ToolContext | None = None) -> str:
        assert ctx is not None
        return f"{ctx.call_id}:{ctx.call.name}:{query}"

    call = ToolCall(id="call_7", name="traced", arguments='{"query": "q"}')
    context = ToolContext(call_id="call_7", call=call)
    result = await traced.execute({"query": "q"}, context=context)
    assert (result.call_id, result.content) == ("call_7", "call_7:traced:q")
    outside = await traced.execute({"query": "q"})  # outside the executor
    assert (outside.call_id, outside.content) == ("", ":traced:q")


# -- decoration errors ---------------------------------------------------------------------


def test_star_args_are_refused_naming_the_parameter() -> None:
    def many(*items: int) -> int:
        return len(items)

    with pytest.raises(TypeError, match="'items'"):
        tool(many)


def test_star_kwargs_are_refused_naming_the_parameter() -> None:
    def options(**opts: int) -> int:
        return len(opts)

    with pytest.raises(TypeError, match="'opts'"):
        tool(options)


def test_a_parameter_without_annotation_is_refused_naming_it() -> None:
    def untyped(a: int, b) -> int:
        return a

    with pytest.raises(TypeError, match=r"'b'.*no type annotation"):
        tool(untyped)


def test_a_type_without_json_schema_is_refused_naming_the_parameter() -> None:
    def opaque(thing: Opaque) -> None:
        return None

    with pytest.raises(TypeError, match=r"'thing'.*no JSON schema"):
        tool(opaque)


def test_an_unresolvable_forward_reference_is_refused() -> None:
    def dangling(thing: NoSuchType) -> None:  # noqa: F821 - the point of the test
        return None

    with pytest.raises(TypeError, match="cannot be resolved"):
        tool(dangling)


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "dot.ted"])
def test_an_invalid_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        tool(name=name)(add.function)


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        tool(timeout=0)(add.function)


def test_sandboxing_a_nested_function_is_refused() -> None:
    def local(a: int) -> int:
        return a

    with pytest.raises(TypeError, match="cannot be sandboxed"):
        tool(sandbox=True)(local)


def test_sandboxing_a_lambda_is_refused() -> None:
    with pytest.raises(TypeError, match="cannot be sandboxed"):
        tool(name="anon", sandbox=True)(lambda: 1)


def test_a_nested_function_without_sandbox_has_no_import_path() -> None:
    def local() -> int:
        return 1

    assert tool(local).import_path is None
    assert not tool(local).sandbox_allowed
    assert add.import_path == "tests.test_tools_decorator:add"


# -- the docstring -------------------------------------------------------------------------


def test_arguments_sections_under_other_names_are_read_too() -> None:
    @tool
    def f(a: int, b: int) -> int:
        """Do it.

        Parameters:
            a: first.
            b: second,
                continued.
        """
        return a + b

    assert props(f)["a"]["description"] == "first."
    assert props(f)["b"]["description"] == "second, continued."


# -- calling -------------------------------------------------------------------------------


def test_decorating_a_tool_again_describes_its_function_afresh() -> None:
    renamed = tool(name="plus")(add)
    assert (renamed.name, renamed.function, renamed(1, 1)) == ("plus", add.function, 2)
    assert renamed.parameters == add.parameters


def test_the_function_stays_callable_directly() -> None:
    assert add(1, 2) == 3
    assert add.function(1) == 3
    assert add.__name__ == "add"
    assert add.__doc__ is not None


async def test_an_async_function_stays_awaitable_directly() -> None:
    assert await shout("hi") == "HI"


async def test_arguments_are_converted_in_lax_mode() -> None:
    assert (await add.execute({"a": "3", "b": "4"})).data == 7

    @tool
    def kinds(f: float, flag: bool) -> tuple[float, bool]:
        return f, flag

    assert (await kinds.execute({"f": "2.5", "flag": "true"})).data == [2.5, True]


async def test_nested_values_arrive_as_their_types() -> None:
    out = everything.bind(GOOD)()
    assert out["point"] == Point(x=1, y=0)
    assert out["address"] == Address(street="Main St", city="Springfield")
    assert out["filters"] == {"tag": "news", "limit": 3}
    assert out["color"] is Color.RED
    assert out["pair"] == (1, "one")
    assert out["ids"] == {1, 2}
    assert out["note"] is None
    assert out["extra"] == [1, 2]


async def test_a_mutable_default_is_fresh_for_every_call() -> None:
    first = everything.bind(GOOD)()
    first["extra"].append(3)
    second = everything.bind(GOOD)()
    assert second["extra"] == [1, 2]


async def test_an_async_function_runs_in_the_calling_thread() -> None:
    @tool
    async def thread_id() -> int:
        return threading.get_ident()

    assert (await thread_id.execute({})).data == threading.get_ident()


async def test_a_sync_function_runs_in_a_worker_thread() -> None:
    @tool
    def thread_id() -> int:
        return threading.get_ident()

    assert (await thread_id.execute({})).data != threading.get_ident()


async def test_a_positional_only_parameter_is_passed_by_position() -> None:
    @tool
    def pos(a: int, /, b: int) -> list[int]:
        return [a, b]

    assert (await pos.execute({"a": 1, "b": 2})).data == [1, 2]


@pytest.mark.parametrize(
    ("change", "path", "says"),
    [
        ({"limit": "many"}, "$.limit", "Expected `int`, got `str`"),
        ({"limit": 0}, "$.limit", ">= 1"),
        ({"limit": None}, "$.limit", "got `null`"),
        ({"point": {"x": "x"}}, "$.point.x", "Expected `int`"),
        ({"point": {}}, "$.point.x", "missing required field `x`"),
        ({"address": {"street": "s"}}, "$.address.city", "missing required field `city`"),
        ({"filters": {"tag": "t", "limit": []}}, "$.filters.limit", "Expected `int`"),
        ({"tags": ["a", 1]}, "$.tags[1]", "Expected `str`"),
        ({"color": "blue"}, "$.color", "Invalid enum value 'blue'"),
        ({"unit": "K"}, "$.unit", "Invalid enum value 'K'"),
        ({"pair": [1]}, "$.pair", "length 2"),
        ({"weights": {"w": "heavy"}}, "$.weights[...]", "Expected `float`"),
        ({"surprise": 1}, "$.surprise", "unknown field `surprise`; the parameters are: point"),
    ],
)
async def test_an_invalid_argument_names_its_path(
    change: dict[str, Any], path: str, says: str
) -> None:
    with pytest.raises(ToolExecutionFailed) as caught:
        await everything.execute({**GOOD, **change})
    assert caught.value.details == {
        "reason": "invalid_arguments",
        "path": path,
        "tool": "everything",
    }
    assert f"invalid arguments for tool 'everything' at {path}" in caught.value.message
    assert says in caught.value.message


async def test_a_missing_required_argument_names_its_path() -> None:
    with pytest.raises(ToolExecutionFailed) as caught:
        await add.execute({"b": 1})
    assert caught.value.details["path"] == "$.a"
    assert "missing required field `a`" in caught.value.message


async def test_arguments_that_are_not_an_object_are_invalid_at_the_root() -> None:
    with pytest.raises(ToolExecutionFailed) as caught:
        await add.execute([1, 2])  # pyright: ignore[reportArgumentType]
    assert caught.value.details["path"] == "$"


async def test_an_exception_of_the_function_propagates_from_execute() -> None:
    @tool
    def broken() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError):
        await broken.execute({})


# -- results -------------------------------------------------------------------------------


def result(value: object, **options: Any) -> ToolResult:
    return to_result(value, call_id="c1", name="t", **options)


def test_a_string_result_is_the_content_as_is() -> None:
    assert result("hello") == ToolResult(call_id="c1", name="t", content="hello")


@pytest.mark.parametrize(
    ("value", "content", "data"),
    [
        ({"b": 1, "a": [1, 2]}, '{"a":[1,2],"b":1}', {"a": [1, 2], "b": 1}),
        (Point(x=1, y=2), '{"x":1,"y":2}', {"x": 1, "y": 2}),
        (Address(street="s", city="c"), '{"street":"s","city":"c"}', {"street": "s", "city": "c"}),
        ({3, 1, 2}, "[1,2,3]", [1, 2, 3]),
        ([1, "two", None], '[1,"two",null]', [1, "two", None]),
        ((1, 2), "[1,2]", [1, 2]),
        (42, "42", 42),
        (2.5, "2.5", 2.5),
        (True, "true", True),
        (None, "null", None),
        (Color.GREEN, '"green"', "green"),
    ],
)
def test_structured_results_are_compact_json_with_the_decoded_data(
    value: object, content: str, data: object
) -> None:
    out = result(value)
    assert (out.content, out.data, out.is_error) == (content, data, False)


def test_an_image_result_carries_the_image() -> None:
    image = ImagePart.from_url("https://example.com/a.png")
    out = result(image)
    assert (out.content, out.images) == ("", [image])


def test_a_list_of_text_and_images_splits_into_text_and_images() -> None:
    image = ImagePart.from_bytes(b"\x89PNG", "image/png")
    out = result(["A chart:", image, TextPart(text="done")])
    assert out.content == "A chart:\ndone"
    assert out.images == [image]


def test_bytes_become_base64_json_with_a_note() -> None:
    out = result(b"\x00\x01")
    decoded = json.loads(out.content)
    assert decoded["encoding"] == "base64"
    assert base64.b64decode(decoded["data"]) == b"\x00\x01"
    assert "2 bytes" in decoded["note"]
    assert out.data == decoded


def test_an_exception_is_an_error_result_without_traceback() -> None:
    out = result(ValueError("bad city"))
    assert out.is_error
    assert out.error_code == "tool_execution_failed"
    assert out.content == "Error: ValueError: bad city"


def test_an_exception_group_of_one_error_is_that_error() -> None:
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [ValueError("deep")])])
    out = result(nested)
    assert out.content == "Error: ValueError: deep"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ToolExecutionFailed("x", details={"reason": "invalid_arguments"}), "invalid_arguments"),
        (ToolExecutionFailed("x", details={"reason": "timeout"}), "timeout"),
        (ToolExecutionFailed("x", details={"reason": "tool_not_found"}), "tool_not_found"),
        (ToolExecutionFailed("x", details={"reason": "memory_limit"}), "tool_execution_failed"),
        (InvalidRequest("not JSON"), "invalid_arguments"),
        (RuntimeError("x"), "tool_execution_failed"),
    ],
)
def test_the_error_code_follows_the_error(error: Exception, code: str) -> None:
    assert result(error).error_code == code


def test_an_error_keeps_the_library_errors_message_and_details() -> None:
    error = ToolExecutionFailed("no good", details={"reason": "invalid_arguments", "path": "$.a"})
    out = result(error)
    assert out.content == "Error: no good"
    assert out.data == {"reason": "invalid_arguments", "path": "$.a"}


def test_secrets_are_scrubbed_from_error_results() -> None:
    key = "sk-proj-abcdefghijklmnopqrstuvwx"
    out = result(RuntimeError(f"auth failed with {key}"))
    assert key not in out.content
    assert "sk-***" in out.content
    assert key not in error_result(f"key {key}", call_id="c", name="t").content


def test_a_long_result_is_truncated_with_a_marker() -> None:
    out = result("x" * (MAX_RESULT_CHARS + 500))
    assert len(out.content) <= MAX_RESULT_CHARS
    assert out.content.endswith(f"of {MAX_RESULT_CHARS + 500} characters omitted]")
    assert "[... truncated:" in out.content


def test_a_truncated_structured_result_drops_its_data() -> None:
    out = result(list(range(100)), max_chars=50)
    assert len(out.content) <= 50
    assert out.data is None


def test_a_value_that_is_not_json_is_an_error_result() -> None:
    out = result(Opaque())
    assert out.is_error
    assert "cannot be encoded as JSON" in out.content


def test_a_tool_result_passes_through_for_this_call() -> None:
    own = ToolResult(call_id="", name="", content="custom", is_error=True, error_code="timeout")
    out = to_result(own, call_id="c9", name="t", duration=1.5)
    assert (out.call_id, out.name, out.content, out.error_code, out.duration) == (
        "c9",
        "t",
        "custom",
        "timeout",
        1.5,
    )
