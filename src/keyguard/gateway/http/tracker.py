"""Open connections of a server and the one periodic sweep that enforces their deadlines."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keyguard.gateway.http.server import HttpServerProtocol


class ConnectionTracker(set["HttpServerProtocol"]):
    """The open connections of a server; a periodic sweep enforces their header and idle
    deadlines (one timer per server instead of several timer objects per request)."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__()
        self._interval = interval
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(self._interval, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for conn in list(self):
            conn.check_deadline(now)
        self._handle = loop.call_later(self._interval, self._sweep, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
