"""The service's exception hierarchy; each class carries the HTTP status and title it maps to."""

from __future__ import annotations

from receipt_verifier.errors import Error


class ServiceError(Error):
    """Base of every service-side error."""

    status = 500
    title = "Internal error"


class ConfigError(ServiceError):
    """A setting, flag or config file is wrong; the message names it."""

    title = "Invalid configuration"


class ClientError(ServiceError):
    """The request is wrong; the message says how."""

    status = 400
    title = "Bad request"


class UnauthorizedError(ClientError):
    """No API key, an unknown one, or a revoked one."""

    status = 401
    title = "Unauthorized"


class ForbiddenError(ClientError):
    """The key is valid but lacks the scope this call needs."""

    status = 403
    title = "Forbidden"


class NotFoundError(ClientError):
    """No such resource for this tenant."""

    status = 404
    title = "Not found"


class PayloadTooLargeError(ClientError):
    """The body exceeds the configured limit."""

    status = 413
    title = "Payload too large"


class UnsupportedMediaTypeError(ClientError):
    """The body's content type is not one the endpoint takes."""

    status = 415
    title = "Unsupported media type"


class UnprocessableError(ClientError):
    """The body parsed but an item in it is invalid; the message names the item."""

    status = 422
    title = "Unprocessable content"


class ConflictError(ServiceError):
    """The resource is not in a state that allows this (or an anchor holds a different value)."""

    status = 409
    title = "Conflict"


class UnavailableError(ServiceError):
    """The service is shutting down or a dependency is down; retry later."""

    status = 503
    title = "Service unavailable"


class StoreError(UnavailableError):
    """The store failed or holds a corrupted record."""

    title = "Store unavailable"


class TicksTakenError(StoreError):
    """Another instance issued proof ids on this clock sequence past these ticks (re-issue after them)."""

    def __init__(self, last_ticks: int) -> None:
        super().__init__(f"proof-id ticks up to {last_ticks} are taken on this clock sequence; retry the request")
        self.last_ticks = last_ticks


class StoreStoppedError(StoreError):
    """The store takes no more writes until the service restarts (its writer stopped, or it was closed)."""


class LeaseLostError(StoreError):
    """This instance no longer holds the lease to close windows; another instance took over."""


class CorruptRecordError(StoreError):
    """A stored record failed its integrity check; it is reported, never served."""

    status = 500
    title = "Corrupted record"


class AnchorBackendError(UnavailableError):
    """An anchor backend could not take a root (retried later)."""

    title = "Anchor backend unavailable"


class RequestTimeoutError(ClientError):
    """The client did not send its body in time."""

    status = 408
    title = "Request timeout"


class ClientGoneError(ClientError):
    """The client hung up before its request was complete; nobody receives an answer."""

    status = 499
    title = "Client closed request"
