"""A string that refuses to be printed, logged, pickled or serialised."""

from __future__ import annotations

import hmac
from typing import Any, NoReturn

from keyguard.domain import redaction
from keyguard.domain.keys import fingerprint, redacted_form


class Secret:
    """Holds a secret value; every way of turning it into text shows only a redacted form.

    ``repr``/``str``/``format``/f-strings/``%`` formatting and logging show ``sk-proj-…wxyz``
    plus a fingerprint; pickling refuses, ``copy`` returns the same object (no second copy of
    the value); ``json.dumps`` fails as for any object.
    The value comes only from :meth:`reveal`, which is easy to grep for in review.
    Every ``Secret`` registers its value with the process-wide redactor, so
    :func:`keyguard.redact` removes it from any text afterwards.
    """

    __slots__ = ("__value", "_fingerprint", "_redacted", "name")

    def __init__(self, value: str, *, name: str | None = None, register: bool = True) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret value must be a str")
        self.__value = value
        self.name = name
        self._fingerprint = fingerprint(value)
        self._redacted = redacted_form(value)
        if register:
            redaction.register(value)

    def reveal(self) -> str:
        """Return the secret value. Call it only where the value is handed to its consumer."""
        return self.__value

    @property
    def fingerprint(self) -> str:
        """A stable, non-reversible identifier of the value (``sha256:`` + 16 hex digits)."""
        return self._fingerprint

    @property
    def redacted(self) -> str:
        """The value with everything but its format prefix and last four characters removed."""
        return self._redacted

    def __repr__(self) -> str:
        label = f"{self.name}=" if self.name else ""
        return f"Secret({label}'{self._redacted}', {self._fingerprint})"

    def __str__(self) -> str:
        return self._redacted

    def __format__(self, spec: str) -> str:
        return format(self._redacted, spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self.__value.encode(), other.reveal().encode())

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __len__(self) -> int:
        return len(self.__value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret objects cannot be pickled; store the value in the keyguard vault")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        self.__reduce__()

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: Any) -> Secret:
        return self
