"""A lab's text and values for one learner: params drawn, `{{ name }}` placeholders
expanded, hidden values redacted, a step's Markdown cut at its `::: exercise ID` and
`::: only CONDITION` directives and its runnable ```` ```python cell ```` blocks.

The placeholder, directive and fence syntax is defined here once; the loader validates a
lab against the same expressions.
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


class Fence(NamedTuple):
    """A fenced code block of a step (CommonMark's rules: it opens with 3 or more backticks
    or tildes; it closes with at least as many of the same character and nothing else;
    never closed, it runs to the end). Any indentation is taken for a fence's, as a fence
    in a list item is indented: this reader does not follow lists."""

    line: int  # of the opening fence (1-based)
    end: int  # of the closing fence, or the last line when it is never closed
    info: str  # what follows the opening fence: "python cell", "sh", ""
    body: str  # the lines between the fences, the fence's indentation taken off
    closed: bool

    @property
    def is_cell(self) -> bool:
        return self.info.split() == CELL_INFO.split()


# The info string of a runnable cell. Plain ```python stays plain code.
CELL_INFO = "python cell"
FENCE_RE = re.compile(r"^( *)(`{3,}|~{3,})(.*)$")


def _scan(source: str) -> list:
    """The step's lines in order: (line number, line) outside fenced blocks, and one Fence
    per fenced block."""
    out: list = []
    lines = source.splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        m = FENCE_RE.match(line)
        # A backtick fence's info string has no backticks (CommonMark): "```a``` b" is text.
        if not m or (m.group(2)[0] == "`" and "`" in m.group(3)):
            out.append((number, line))
            continue
        indent, fence, info = len(m.group(1)), m.group(2), m.group(3).strip()
        closer = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body, start = [], number
        while number < len(lines) and not closer.match(lines[number]):
            body.append(_dedent(lines[number], indent))
            number += 1
        closed = number < len(lines)
        out.append(Fence(start, number + 1 if closed else max(number, start), info,
                         "".join(f"{b}\n" for b in body), closed))
        number += closed
    return out


def _dedent(line: str, indent: int) -> str:
    """`line` with up to `indent` leading spaces taken off (an indented fence's content)."""
    return line[min(indent, len(line) - len(line.lstrip(" "))):]


def text_lines(source: str):
    """(line number, line) of each line of Markdown outside fenced code blocks."""
    for item in _scan(source):
        if not isinstance(item, Fence):
            yield item


def fences(source: str) -> list[Fence]:
    """The fenced code blocks of a step, in order."""
    return [item for item in _scan(source) if isinstance(item, Fence)]


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
    """A piece of a step: Markdown, the place of an exercise, or a runnable Python cell.
    `only`: the condition of the `::: only` block it sits in, if any. A cell's `index`
    counts the step's cells from 0 in the order they are written (cells of both `::: only`
    blocks included, so it is the same on every host) and `line` is the line of its
    opening fence in the step's source."""

    kind: str  # "markdown", "exercise" or "cell"
    value: str  # the Markdown, the exercise id, or the cell's Python source
    only: str | None = None
    index: int | None = None
    line: int | None = None


def split_step(source: str) -> list[Part]:
    """A step's Markdown cut at its directives and its `python cell` blocks, in order (the
    lab was validated: every directive is an exercise, an `::: only CONDITION` opening a
    block, or `:::` closing it). A cell with nothing but blank lines is left out."""
    lines = source.splitlines(keepends=True)
    parts, start, only, cells = [], 0, None, 0

    def text_until(line: int) -> None:
        parts.append(Part("markdown", "".join(lines[start:line - 1]), only))

    for item in _scan(source):
        if isinstance(item, Fence):
            if item.is_cell:
                text_until(item.line)
                start = item.end
                if item.body.strip():
                    parts.append(Part("cell", item.body, only, cells, item.line))
                    cells += 1
            continue
        number, text = item[0], item[1].strip()
        if not DIRECTIVE_RE.match(text):
            continue
        text_until(number)
        start = number
        if m := EXERCISE_DIRECTIVE_RE.match(text):
            parts.append(Part("exercise", m.group(1)))
        elif m := ONLY_DIRECTIVE_RE.match(text):
            only = (m.group(1) or "").strip()
        elif END_DIRECTIVE_RE.match(text):
            only = None
    parts.append(Part("markdown", "".join(lines[start:]), only))
    return [p for p in parts if p.kind != "markdown" or p.value.strip()]
