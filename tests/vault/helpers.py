"""Helpers shared by the vault tests (import as ``vault.helpers``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now
