"""A connection's outgoing queue: bounded, coalescing, drained by one writer task.

trio-websocket spends about 66 us of CPU per message it sends, so everything that is ready
for a connection goes out as one message: producers append encoded frames without waiting
(`put_chunk`, `put_frame`), and the writer takes the whole queue at once (`take`), merging
the chunks of one invocation into one ``chunks`` frame and several frames into one
``batch``. The queue is bounded in frames and bytes: a producer that finds it full is told
so (False), waits for room with `wait_room`, and the front cancels it if no room comes in
time, because a client that does not read must not make the server buffer without bound.
Terminal and control frames are let in past the bound (there is at most one terminal frame
per invocation, and control answers wait for room first).
"""

from __future__ import annotations

from typing import Final, final

import msgspec
import trio

from ...types import StreamChunk

__all__ = ["ENCODER", "Outbox"]

ENCODER: Final = msgspec.json.Encoder()

# Bytes a frame's envelope adds to its payload, for the byte bound (an estimate).
_FRAME_OVERHEAD: Final = 32


@final
class _Group:
    """Chunks of one invocation that are waiting together: one ``chunk(s)`` frame."""

    __slots__ = ("chunks", "id_json")

    def __init__(self, id_json: bytes) -> None:
        self.id_json = id_json
        self.chunks: list[bytes] = []

    def encode(self) -> bytes:
        if len(self.chunks) == 1:
            return b'{"type":"chunk","id":%s,"chunk":%s}' % (self.id_json, self.chunks[0])
        return b'{"type":"chunks","id":%s,"chunks":[%s]}' % (self.id_json, b",".join(self.chunks))


@final
class Outbox:
    """The bounded queue of one connection's outgoing frames (see the module docstring)."""

    __slots__ = (
        "_drained",
        "_entries",
        "_groups",
        "_ready",
        "_room",
        "frames",
        "in_flight",
        "max_bytes",
        "max_frames",
        "nbytes",
    )

    def __init__(self, *, max_frames: int, max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.frames = 0
        """Frames queued now (each chunk counts as one)."""
        self.nbytes = 0
        """Bytes queued now (approximate: the payloads plus a fixed envelope each)."""
        self.in_flight = False
        """The writer has taken a message and is sending it."""
        self._entries: list[bytes | _Group] = []
        self._groups: dict[str, _Group] = {}
        self._ready = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()
        self._drained = trio.lowlevel.ParkingLot()

    def full(self) -> bool:
        return self.frames >= self.max_frames or self.nbytes >= self.max_bytes

    def _added(self, size: int) -> None:
        self.frames += 1
        self.nbytes += size + _FRAME_OVERHEAD
        self._ready.unpark_all()

    def put_chunk(self, id: str, id_json: bytes, chunk: StreamChunk) -> bool:
        """Queue a chunk of invocation ``id``; False (nothing queued) when the queue is full."""
        if self.full():
            return False
        data = ENCODER.encode(chunk)
        group = self._groups.get(id)
        if group is None:
            group = self._groups[id] = _Group(id_json)
            self._entries.append(group)
        group.chunks.append(data)
        self._added(len(data))
        return True

    def put_frame(self, data: bytes, *, id: str | None = None, capped: bool = True) -> bool:
        """Queue an encoded frame (of invocation ``id``, if any).

        With ``capped`` the frame is refused (False) when the queue is full; without, it is
        queued regardless (terminal frames, control answers after `wait_room`).
        """
        if capped and self.full():
            return False
        if id is not None:
            self._groups.pop(id, None)  # later chunks of ``id`` must come after this frame
        self._entries.append(data)
        self._added(len(data))
        return True

    async def wait_room(self) -> None:
        """Wait until the queue is below its bounds (always a checkpoint)."""
        if not self.full():
            await trio.lowlevel.checkpoint()
            return
        while self.full():
            await self._room.park()

    async def wait_ready(self) -> None:
        """Wait until something is queued (the writer's wait)."""
        while not self._entries:
            await self._ready.park()

    async def wait_drained(self) -> None:
        """Wait until everything queued has been handed to the socket."""
        while self._entries or self.in_flight:
            await self._drained.park()

    def take(self) -> tuple[bytes, int]:
        """Everything queued as one message, and the number of frames in it."""
        entries, frames = self._entries, self.frames
        self._entries = []
        self._groups.clear()
        self.frames = self.nbytes = 0
        self.in_flight = True
        self._room.unpark_all()
        if len(entries) == 1:
            entry = entries[0]
            return (entry if isinstance(entry, bytes) else entry.encode()), frames
        parts = [entry if isinstance(entry, bytes) else entry.encode() for entry in entries]
        return b'{"type":"batch","frames":[%s]}' % b",".join(parts), frames

    def sent(self) -> None:
        """The message from `take` has been sent."""
        self.in_flight = False
        if not self._entries:
            self._drained.unpark_all()
