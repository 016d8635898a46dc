"""Errors in one place: JSON under /api/ (and for clients that ask for JSON), a page for
browsers; a request that failed with a 500 has its database transaction rolled back."""

from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from .extensions import db


def _wants_json() -> bool:
    return request.path.startswith("/api/") or \
        request.accept_mimetypes.best == "application/json"


def _respond(e: HTTPException):
    if _wants_json():
        return jsonify(error=e.name.lower().replace(" ", "_"), message=e.description), e.code
    return render_template("error.html", error=e), e.code


def register(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        return _respond(e)

    @app.errorhandler(CSRFError)
    def csrf_error(e: CSRFError):
        e.description = ("This form has expired or did not come from this site. Reload the "
                         "page and try again.")
        return _respond(e)

    @app.errorhandler(InternalServerError)
    def server_error(e: InternalServerError):
        # Flask has logged the exception already (and re-raises it instead when testing).
        db.session.rollback()
        return _respond(InternalServerError(
            description="Something went wrong on our side; it has been logged."))
