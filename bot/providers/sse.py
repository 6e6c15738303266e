"""A Server-Sent Events reader: the WHATWG HTML standard's "interpreting an event stream", fed bytes.

It knows nothing of HTTP: the caller reads the response (bounding its time and size) and feeds each
chunk to ``EventStreamParser.feed``, which returns the events that chunk completed. An event larger
than ``max_event`` bytes is dropped whole. Why not a library: docs/architecture.md, "Providers".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_EVENT_BYTES = 1024 * 1024
_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Event:
    data: str
    type: str = "message"
    id: str = ""  # the last event id when this event was dispatched
    retry: int | None = None  # the reconnection time (ms) the stream asked for so far


class EventStreamParser:
    """Feed it the stream's bytes in chunks of any size; it returns the completed events."""

    def __init__(self, max_event: int = MAX_EVENT_BYTES) -> None:
        self.max_event = max_event
        self.last_id = ""
        self.retry: int | None = None
        self.comments = 0  # comment lines seen (keep-alives)
        self.dropped = 0  # events dropped for going past max_event bytes
        self._pending = bytearray()  # a line without its end yet
        self._skip_lf = False  # the last chunk ended with CR: an LF starting the next one belongs to it
        self._first = True  # the next line is the stream's first (its BOM, if any, is dropped)
        self._data: list[str] = []
        self._type = ""
        self._id = ""
        self._size = 0
        self._dropping = False  # the event in progress went past max_event: ignored up to its blank line
        self._skipping_line = False  # ...and so are the rest of the line that went past it

    def feed(self, chunk: bytes) -> list[Event]:
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buf = bytes(self._pending) + chunk if self._pending else chunk
        events: list[Event] = []
        start = 0
        for match in _EOL.finditer(buf):
            if match.group() == b"\r" and match.end() == len(buf):
                self._skip_lf = True
            if self._skipping_line:
                self._skipping_line = False
            else:
                self._line(buf[start:match.start()], events)
            start = match.end()
        rest = b"" if self._skipping_line else buf[start:]
        if len(rest) + self._size > self.max_event:
            self._drop()
            self._skipping_line, rest = True, b""
        self._pending = bytearray(rest)
        return events

    def _drop(self) -> None:
        if not self._dropping:
            self.dropped += 1
        self._dropping = True
        self._data, self._size = [], 0

    def _line(self, raw: bytes, events: list[Event]) -> None:
        if self._first:
            self._first = False
            if raw.startswith(_BOM):
                raw = raw[len(_BOM):]
        line = raw.decode("utf-8", "replace")
        if not line:
            if self._dropping:
                self._dropping, self._type = False, ""
                return
            self._dispatch(events)
            return
        if self._dropping:
            return
        if line.startswith(":"):
            self.comments += 1
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._size += len(raw) + 1
            if self._size > self.max_event:
                self._drop()
                return
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry = int(value)

    def _dispatch(self, events: list[Event]) -> None:
        self.last_id = self._id
        data, kind = self._data, self._type
        self._data, self._type, self._size = [], "", 0
        if data:
            events.append(Event("\n".join(data), kind or "message", self.last_id, self.retry))
