"""The service's exception hierarchy, grouped by whose fault it is (maps onto HTTP statuses)."""

from __future__ import annotations

from receipt_verifier.errors import Error


class ServiceError(Error):
    """Base of every service-side error."""

    status = 500
    title = "Internal error"


class ClientError(ServiceError):
    """The request is wrong; the message says how."""

    status = 400
    title = "Bad request"


class ConflictError(ServiceError):
    """An anchor already holds a different value for the same key."""

    status = 409
    title = "Conflict"


class StoreError(ServiceError):
    """The store failed or holds a corrupted record."""

    status = 503
    title = "Store unavailable"


class AnchorBackendError(ServiceError):
    """An anchor backend could not take a root (retried later)."""

    status = 503
    title = "Anchor backend unavailable"
