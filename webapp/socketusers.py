"""Who is on a Socket.IO connection: the signed-in user of the request (None in an app
without Flask-Login, as some tests make) and a hashable key for per-user bookkeeping (None
for an anonymous socket). Shared by the terminal and notebook namespaces."""

from __future__ import annotations

from collections.abc import Hashable

from flask import current_app
from flask_login import current_user


def socket_user():
    if getattr(current_app, "login_manager", None) is None:
        return None
    return current_user._get_current_object()


def user_key(user) -> Hashable | None:
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return getattr(user, "id", None)
