"""The one error hierarchy. Each class carries its HTTP status and OpenAI's ``type`` and ``code``.

The API renders every :class:`ThreadlineError` as ``{"error": {"message", "type", "param", "code"}}``
(see ``api/errors.py``); nothing else in the code base builds error bodies.
"""

from __future__ import annotations


class ThreadlineError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None
    retry_after: int | None = None
    """Seconds after which the request may be tried again (sent as ``Retry-After``)."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequestError(ThreadlineError):
    """The request is malformed or not allowed in the current state (400)."""

    status = 400
    type = "invalid_request_error"


class MissingBetaHeaderError(InvalidRequestError):
    code = "invalid_beta"


class FileContentError(InvalidRequestError):
    """A file whose text cannot be extracted for search: a format we do not read (``unsupported_file``)
    or a file that is damaged, empty or past our size limits (``invalid_file``)."""

    code = "invalid_file"


class AuthenticationError(ThreadlineError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class RequestTimeoutError(ThreadlineError):
    """The client stopped sending its request's body (408; the connection is closed)."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class TooManyRequestsError(ThreadlineError):
    """Too much of one kind of work at once for one project (429, as OpenAI's rate limits)."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"
    retry_after = 1


class PayloadTooLargeError(ThreadlineError):
    status = 413
    type = "invalid_request_error"


class NotFoundError(ThreadlineError):
    status = 404
    type = "invalid_request_error"


class ServiceUnavailableError(ThreadlineError):
    status = 503
    type = "server_error"
    code = "service_unavailable"


class ModelCallError(ThreadlineError):
    """A model call asked for directly (``/v1/chat/completions``) failed: 502, or the upstream's own
    client-error status and type when it refused the request."""

    status = 502
    type = "server_error"
    code: str | None = "model_error"


class DatabaseUnavailableError(ServiceUnavailableError):
    """The database cannot be reached or is too busy right now (503): nothing was done, and the
    request may be retried."""

    code = "database_unavailable"
    retry_after = 2


class SandboxUnavailableError(ServiceUnavailableError):
    """code_interpreter cannot run here: no working sandbox (code never runs unsandboxed)."""

    code = "sandbox_unavailable"


class SandboxBusyError(ServiceUnavailableError):
    """Every kernel slot is running code; the call may be retried."""

    code = "sandbox_busy"


def describe_size(limit: int) -> str:
    """A byte count as limits are spoken of in messages: ``16 MiB``, ``512 KiB``, ``1000 bytes``."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= factor and limit % factor == 0:
            return f"{limit // factor} {unit}"
    return f"{limit} bytes"


class RemoteFetchError(InvalidRequestError):
    """An outbound fetch (an MCP server, a web page, a search backend, an ``input_file``'s URL) did
    not succeed: it took too long, its response was too large or an error, or it could not connect."""

    code = "remote_fetch_failed"


class RemoteRefusedError(RemoteFetchError):
    """The remote guard refused a URL before connecting: not http(s), or a host that is (or resolves
    to) a private, loopback, link-local, metadata or otherwise non-public address the operator has
    not allowed (``THREADLINE_REMOTE_ALLOW``)."""

    code = "url_not_allowed"
