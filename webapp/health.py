"""GET /api/health (JSON, like every error under /api/, see errors.py)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from .extensions import db

bp = Blueprint("health", __name__, url_prefix="/api")


@bp.route("/health")
def health():
    """For load balancers and `scripts/serve`: the app runs and its database answers."""
    db.session.execute(text("SELECT 1"))
    return jsonify(ok=True)
