"""A lab's text and values for one learner: params drawn, `{{ name }}` placeholders
expanded, a step's Markdown cut at its `::: exercise ID` directives.

The placeholder and directive syntax is defined here once; the loader validates a lab
against the same expressions.
"""

from __future__ import annotations

import re
import secrets

PLACEHOLDER_RE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
DIRECTIVE_RE = re.compile(r"^:::(.*)$")
EXERCISE_DIRECTIVE_RE = re.compile(r"^:::\s*exercise\s+(\S+)\s*$")
TOKEN_LETTERS = "abcdefghijkmnpqrstuvwxyz23456789"


def draw_params(specs: dict[str, dict], rng=None) -> dict:
    """One learner's values for the lab's params (`rng`: a random.Random for tests)."""
    rng = rng or secrets.SystemRandom()
    out = {}
    for name, spec in specs.items():
        (kind, value), = spec.items()
        if kind in ("choice", "word"):
            out[name] = rng.choice(value)
        elif kind == "int":
            out[name] = rng.randint(value[0], value[1])
        else:
            out[name] = "".join(rng.choice(TOKEN_LETTERS) for _ in range(value))
    return out


def expand(text: str | None, params: dict) -> str:
    """`{{ name }}` -> this learner's value (validation made sure every name exists)."""
    if not text:
        return text or ""
    return PLACEHOLDER_RE.sub(lambda m: str(params.get(m.group(1), m.group(0))), text)


def param_env(params: dict) -> dict[str, str]:
    return {f"NSLAB_PARAM_{k.upper()}": str(v) for k, v in params.items()}


def directive_lines(source: str):
    """(line number, text) of each `:::` line outside fenced code blocks."""
    fence = None
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        opener = re.match(r"^(`{3,}|~{3,})", stripped)
        if opener and (fence is None or stripped.startswith(fence)):
            fence = None if fence else opener.group(1)
            continue
        if not fence and DIRECTIVE_RE.match(stripped):
            yield number, stripped


def split_at_exercises(source: str) -> list[tuple[str, str]]:
    """A step's Markdown cut at its exercise directives: [("markdown", text) |
    ("exercise", id)] in order (the lab was validated, so every directive is one)."""
    lines = source.splitlines(keepends=True)
    parts, start = [], 0
    for number, text in directive_lines(source):
        m = EXERCISE_DIRECTIVE_RE.match(text)
        if not m:
            continue
        parts.append(("markdown", "".join(lines[start:number - 1])))
        parts.append(("exercise", m.group(1)))
        start = number
    parts.append(("markdown", "".join(lines[start:])))
    return [(kind, value) for kind, value in parts if kind == "exercise" or value.strip()]
