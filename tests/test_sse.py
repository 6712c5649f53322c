"""The incremental Server-Sent Events parser."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llm_invocation.providers._sse import SSEEvent, SSEParser


def parse(*pieces: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for piece in pieces:
        events.extend(parser.feed(piece))
    events.extend(parser.flush())
    return events


def test_lf_crlf_and_cr_line_endings_give_the_same_events() -> None:
    for sep in (b"\n", b"\r\n", b"\r"):
        body = sep.join([b"data: one", b"", b"data: two", b"", b""])
        assert [e.data for e in parse(body)] == [b"one", b"two"]


def test_a_crlf_split_across_reads_is_one_line_ending() -> None:
    assert [e.data for e in parse(b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n")] == [b"a", b"b"]


def test_comments_are_ignored() -> None:
    events = parse(b": OPENROUTER PROCESSING\n\n: keep-alive\ndata: x\n\n")
    assert [e.data for e in events] == [b"x"]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert parse(b"data: a\ndata: b\ndata:c\n\n")[0].data == b"a\nb\nc"


def test_event_id_and_retry_fields_are_kept() -> None:
    (event,) = parse(b"event: message_start\nid: 7\nretry: 1500\ndata: {}\n\n")
    assert (event.event, event.id, event.retry, event.data) == ("message_start", "7", 1500, b"{}")


def test_the_event_name_resets_after_each_event_but_the_id_persists() -> None:
    first, second = parse(b"event: ping\nid: 1\ndata: a\n\ndata: b\n\n")
    assert (first.event, second.event) == ("ping", "message")
    assert second.id == "1"


def test_one_optional_space_after_the_colon_is_dropped_and_trailing_spaces_are_kept() -> None:
    (event,) = parse(b'data:  {"type":"message_stop"}   \n\n')
    assert event.data == b' {"type":"message_stop"}   '


def test_a_leading_space_before_a_field_name_is_tolerated() -> None:
    assert [e.data for e in parse(b' data: {"a":1}\n\n')] == [b'{"a":1}']


def test_unknown_fields_and_bad_retry_values_are_ignored() -> None:
    (event,) = parse(b"foo: bar\nretry: soon\ndata: x\n\n")
    assert (event.data, event.retry) == (b"x", None)


def test_an_event_without_data_is_not_dispatched() -> None:
    assert parse(b"event: ping\n\n") == []


def test_a_final_event_without_its_blank_line_is_flushed_at_the_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: last") == []
    assert parser.pending
    assert [e.data for e in parser.flush()] == [b"last"]
    assert not parser.pending


def test_an_id_with_a_nul_is_ignored() -> None:
    (event,) = parse(b"id: a\x00b\ndata: x\n\n")
    assert event.id is None


_events = st.lists(
    st.tuples(
        st.sampled_from(["", "message_start", "content_block_delta"]),
        st.lists(
            st.text(
                st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                max_size=20,
            ),
            min_size=1,
            max_size=3,
        ),
    ),
    min_size=1,
    max_size=8,
)


@given(
    events=_events,
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_any_split_of_a_stream_into_reads_yields_the_same_events(
    events: list[tuple[str, list[str]]], newline: str, cuts: list[int]
) -> None:
    lines: list[str] = []
    for name, data in events:
        if name:
            lines.append(f"event: {name}")
        lines.extend(f"data: {d}" for d in data)
        lines.append("")
    body = (newline.join(lines) + newline).encode()
    whole = parse(body)
    points = sorted({c % (len(body) + 1) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert parse(*pieces) == whole
    expected = [(name or "message", "\n".join(data).encode()) for name, data in events]
    assert [(e.event, e.data) for e in whole] == expected
