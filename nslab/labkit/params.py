"""A lab's text and values for one learner: params drawn, `{{ name }}` placeholders
expanded, hidden values redacted, a step's Markdown cut at its `::: exercise ID` and
`::: only CONDITION` directives.

The placeholder and directive syntax is defined here once; the loader validates a lab
against the same expressions.
"""

from __future__ import annotations

import re
import secrets
from typing import NamedTuple

# `{{ name }}`: one word. Anything else between braces is left as it is, so that Docker's
# Go templates (`docker inspect -f '{{.State.Pid}}'`, `{{json .Config}}`) can be written
# in a lab as they are typed.
PLACEHOLDER_RE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}")
DIRECTIVE_RE = re.compile(r"^:::(.*)$")
EXERCISE_DIRECTIVE_RE = re.compile(r"^:::\s*exercise\s+(\S+)\s*$")
ONLY_DIRECTIVE_RE = re.compile(r"^:::\s*only(?:\s+(.*?))?\s*$")
END_DIRECTIVE_RE = re.compile(r"^:::\s*$")
REDACTED = "…"
# A hidden value this long is redacted wherever it appears; a shorter one (a small number,
# a short word) only where no letter or digit touches it, or "1" would vanish from "10"
# (it still goes from "10.1.0.1": a dot is not part of a number's digits).
REDACT_ANYWHERE = 4
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


def text_lines(source: str):
    """(line number, line) of each line of Markdown outside fenced code blocks."""
    fence = None
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        opener = re.match(r"^(`{3,}|~{3,})", stripped)
        if opener and (fence is None or stripped.startswith(fence)):
            fence = None if fence else opener.group(1)
            continue
        if not fence:
            yield number, line


def directive_lines(source: str):
    """(line number, text) of each `:::` line outside fenced code blocks."""
    for number, line in text_lines(source):
        if DIRECTIVE_RE.match(line.strip()):
            yield number, line.strip()


def placeholders(text: str | None) -> list[str]:
    """The param names `text` uses, in order."""
    return [m.group(1) for m in PLACEHOLDER_RE.finditer(text or "")]


def redact(text: str, values: list[str]) -> tuple[str, bool]:
    """`text` with each of `values` replaced by "…" (case-insensitive); whether any was."""
    found = False
    for value in sorted({v.strip() for v in values if v.strip()}, key=len, reverse=True):
        pattern = re.escape(value)
        if len(value) < REDACT_ANYWHERE:
            pattern = rf"(?<![A-Za-z0-9]){pattern}(?![A-Za-z0-9])"
        text, n = re.subn(pattern, REDACTED, text, flags=re.IGNORECASE)
        found |= n > 0
    return text, found


class Part(NamedTuple):
    """A piece of a step: Markdown (`only`: the condition of the block it sits in, if any)
    or the place of an exercise."""

    kind: str  # "markdown" or "exercise"
    value: str  # the Markdown, or the exercise id
    only: str | None = None


def split_step(source: str) -> list[Part]:
    """A step's Markdown cut at its directives, in order (the lab was validated: every
    directive is an exercise, an `::: only CONDITION` opening a block, or `:::` closing it)."""
    lines = source.splitlines(keepends=True)
    parts, start, only = [], 0, None
    for number, text in directive_lines(source):
        parts.append(Part("markdown", "".join(lines[start:number - 1]), only))
        start = number
        if m := EXERCISE_DIRECTIVE_RE.match(text):
            parts.append(Part("exercise", m.group(1)))
        elif m := ONLY_DIRECTIVE_RE.match(text):
            only = (m.group(1) or "").strip()
        elif END_DIRECTIVE_RE.match(text):
            only = None
    parts.append(Part("markdown", "".join(lines[start:]), only))
    return [p for p in parts if p.kind == "exercise" or p.value.strip()]
