"""The one exception type every engine raises (vendor errors are mapped to it)."""

from __future__ import annotations


class EngineError(Exception):
    """Any engine failure, mapped from the vendor's own exception types.

    ``retryable`` is true for connection errors, timeouts, 429 and 5xx: the failures a
    fallback engine may take over. A bad key (401/403) or a bad request is not.
    ``overloaded`` marks our own overload (a request that waited too long for a local
    model's thread): the call gets the busy message and it never counts toward the
    global stop, which is for provider failures.
    ``code`` is the vendor's error code when it gave one (e.g. Groq's ``tool_use_failed``:
    the model produced a malformed tool call, a fault of the generation, not the vendor).
    """

    def __init__(
        self,
        message: str,
        *,
        vendor: str,
        status: int | None = None,
        retryable: bool = False,
        overloaded: bool = False,
        code: str = "",
    ) -> None:
        super().__init__(message)
        self.vendor = vendor
        self.status = status
        self.retryable = retryable
        self.overloaded = overloaded
        self.code = code

    def __str__(self) -> str:
        status = f" {self.status}" if self.status is not None else ""
        return f"{self.vendor}{status}: {self.args[0]}"
