"""Who a request comes from: the user name its bearer token names (set for the request by
:class:`lib.patches.RequestUser`)."""

from __future__ import annotations

import contextvars

_request_user: contextvars.ContextVar[str | None] = contextvars.ContextVar("user", default=None)


def request_user() -> str | None:
    """The user name the request's bearer token names (authentication on), else ``None``."""
    return _request_user.get()


def set_request_user(name: str | None) -> contextvars.Token:
    """Set the request's user for the code the request runs; returns the token to reset it with."""
    return _request_user.set(name)


def reset_request_user(token: contextvars.Token) -> None:
    _request_user.reset(token)
