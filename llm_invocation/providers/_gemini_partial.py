"""Vertex's argument streaming for Gemini function calls (``partialArgs``).

A call opened by ``{"name", "willContinue": true}`` receives its arguments as fragments, each
naming its value by a JSON path, and is closed by an empty ``functionCall``. `PartialCall`
turns the fragments into argument text as they arrive, so the deltas of one call concatenate
to the compact JSON of its arguments, exactly what a whole call would have carried.
"""

from __future__ import annotations

import re
from typing import Final, final

import msgspec

from ._gemini_wire import PartialArg

__all__ = ["PartialCall", "Segment", "parse_json_path"]

_ENCODER: Final = msgspec.json.Encoder()

# -- Vertex partialArgs -------------------------------------------------------------------------
_PATH_STEP: Final = re.compile(r"""\.([^.\[\]]+)|\[(\d+)\]|\[(['"])(.*?)\3\]""")

Segment = str | int


def parse_json_path(path: str) -> tuple[Segment, ...] | None:
    """The steps of a ``partialArgs`` JSON path: ``$.a.b[0]['c.d']`` is ``("a", "b", 0, "c.d")``.

    Returns None for a path that is not of this form or has no step.
    """
    if path[:1] != "$":
        return None
    steps: list[Segment] = []
    pos = 1
    end = len(path)
    while pos < end:
        match = _PATH_STEP.match(path, pos)
        if match is None:
            return None
        key, number, _, quoted = match.groups()
        if key is not None:
            steps.append(key)
        elif number is not None:
            steps.append(int(number))
        else:
            steps.append(quoted)
        pos = match.end()
    return tuple(steps) or None


def _value_json(fragment: PartialArg) -> str | None:
    if fragment.string_value is not None:
        return _ENCODER.encode(fragment.string_value).decode()
    if fragment.number_value is not None:
        return _ENCODER.encode(fragment.number_value).decode()
    if fragment.bool_value is not None:
        return "true" if fragment.bool_value else "false"
    if fragment.null_value is not msgspec.UNSET:
        return "null"
    return None


class _Level:
    __slots__ = ("count", "is_array", "step")

    def __init__(self, step: Segment, *, is_array: bool) -> None:
        self.step = step
        self.is_array = is_array
        self.count = 0


@final
class PartialCall:
    """Turns one call's ``partialArgs`` fragments into argument text as they arrive.

    The fragments of a call name their values by JSON path in document order (the model
    writes the arguments left to right). The text emitted so far is always a prefix of the
    compact JSON of the arguments: containers are opened and closed as the paths move, and a
    string value that continues (``willContinue``) stays open until its last piece. `close`
    returns the brackets still open, so all deltas concatenated are the whole JSON object.
    A path that goes back into a closed container yields a repeated key (the JSON stays valid).
    """

    __slots__ = ("_leaf", "_stack", "_string_open", "index")

    def __init__(self, index: int) -> None:
        self.index = index
        self._stack: list[_Level] = []
        self._string_open = False
        self._leaf = ""

    def feed(self, fragments: list[PartialArg]) -> str:
        """The argument text the fragments add."""
        out: list[str] = []
        for fragment in fragments:
            path = fragment.json_path
            piece = fragment.string_value
            if piece is not None and path == self._leaf:
                if self._string_open:
                    out.append(_ENCODER.encode(piece).decode()[1:-1])
                    if not fragment.will_continue:
                        out.append('"')
                        self._string_open = False
                    continue
                if not piece:
                    continue  # an empty end-of-string marker after the string closed
            value = _value_json(fragment)
            steps = parse_json_path(path) if value is not None else None
            if value is None or steps is None:
                continue
            self._leaf = path
            self._navigate(steps, out)
            if piece is not None and fragment.will_continue:
                out.append(value[:-1])
                self._string_open = True
            else:
                out.append(value)
        return "".join(out)

    def close(self) -> str:
        """The text that closes the arguments (``{}`` when no fragment came)."""
        if not self._stack:
            return "{}"
        out = ['"'] if self._string_open else []
        self._string_open = False
        while self._stack:
            out.append("]" if self._stack.pop().is_array else "}")
        return "".join(out)

    def _navigate(self, steps: tuple[Segment, ...], out: list[str]) -> None:
        stack = self._stack
        if self._string_open:
            out.append('"')
            self._string_open = False
        if not stack:
            stack.append(_Level("", is_array=False))
            out.append("{")
        containers = steps[:-1]
        common = 0
        while (
            common < len(containers)
            and common + 1 < len(stack)
            and stack[common + 1].step == containers[common]
            and type(stack[common + 1].step) is type(containers[common])
        ):
            common += 1
        while len(stack) > common + 1:
            out.append("]" if stack.pop().is_array else "}")
        for i in range(common, len(containers)):
            step = containers[i]
            self._member(step, out)
            child = containers[i + 1] if i + 1 < len(containers) else steps[-1]
            is_array = isinstance(child, int)
            out.append("[" if is_array else "{")
            stack.append(_Level(step, is_array=is_array))
        self._member(steps[-1], out)

    def _member(self, step: Segment, out: list[str]) -> None:
        parent = self._stack[-1]
        if parent.count:
            out.append(",")
        parent.count += 1
        if not parent.is_array:
            out.append(_ENCODER.encode(str(step)).decode())
            out.append(":")
