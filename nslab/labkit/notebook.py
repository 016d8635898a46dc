"""A step written as a Jupyter notebook (`steps/x.ipynb`, nbformat v4), read into the
Markdown every other step is: each markdown cell as it is (directives allowed), each code
cell as a ```` ```python cell ```` block. Outputs stored in the file are ignored: a
learner's cell output comes from their own kernel.

Everything after this reads the step as Markdown; `origins` keeps, per line of it, the
cell it came from, so an error is reported as `file: cell N: message`.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

import nbformat

from .params import CELL_INFO, fences

# A kernel whose language is not Python cannot run a lab's cells (they run in ipykernel).
KERNEL_LANGUAGE = "python"
# nbformat's message may quote a whole cell: an author needs its start.
MESSAGE_MAX = 200


class Problem(NamedTuple):
    cell: int | None  # from 1 (None: the notebook as a whole)
    line: int  # in the cell, or in the file when `cell` is None
    message: str


class Notebook(NamedTuple):
    source: str  # Markdown
    origins: list[tuple[int, int]]  # per line of `source`: (cell, line in the cell)
    problems: list[Problem]


def read_notebook(text: str) -> Notebook:
    """The notebook in `text` as a step's Markdown, with every problem found."""
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as e:
        return Notebook("", [], [Problem(None, e.lineno, f"not a notebook: not valid JSON "
                                                         f"({e.msg})")])
    problems = _shape(nb)
    if problems:
        return Notebook("", [], problems)
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as e:
        return Notebook("", [], [_invalid(e)])
    problems = _language(nb["metadata"])
    lines: list[str] = []
    origins: list[tuple[int, int]] = []
    for number, cell in enumerate(nb["cells"], 1):
        source = _text(cell["source"])
        if cell["cell_type"] == "markdown":
            body, problem = _markdown(source)
            if problem:
                problems.append(Problem(number, problem[0], problem[1]))
                continue
            cell_lines = body.splitlines()
            where = list(range(1, len(cell_lines) + 1))
        elif cell["cell_type"] == "code":
            if not source.strip():
                continue  # Jupyter leaves an empty cell at the end of most notebooks
            fence = "`" * max(3, _longest_backticks(source) + 1)
            cell_lines = [f"{fence}{CELL_INFO}", *source.splitlines(), fence]
            count = len(cell_lines) - 2
            where = [1, *range(1, count + 1), count]
        else:
            problems.append(Problem(number, 1, "a raw cell has no place in a lab step: make "
                                               "it a markdown or a code cell"))
            continue
        lines += [*cell_lines, ""]  # a blank line, so two cells' paragraphs stay apart
        origins += [(number, n) for n in where] + [(number, where[-1] if where else 1)]
    return Notebook("".join(f"{line}\n" for line in lines), origins, problems)


def _shape(nb) -> list[Problem]:
    """What nbformat.validate assumes before it checks anything: a v4 notebook whose cells
    each have a unique id (from v4.5 on; validate would invent one and warn)."""
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list) \
            or not all(isinstance(c, dict) for c in nb["cells"]):
        return [Problem(None, 1, "not a notebook: no list of cells")]
    version, minor = nb.get("nbformat"), nb.get("nbformat_minor")
    if version != 4 or not isinstance(minor, int) or isinstance(minor, bool):
        return [Problem(None, 1, f"nbformat {version!r} is not supported: save the notebook "
                                 "as nbformat 4 (any current Jupyter does)")]
    problems, seen = [], {}
    if minor >= 5:
        for number, cell in enumerate(nb["cells"], 1):
            cid = cell.get("id")
            if cid is None:
                problems.append(Problem(number, 1, "the cell has no id (nbformat 4.5 needs "
                                                   "one): open and save it in Jupyter"))
            elif isinstance(cid, str) and cid in seen:
                problems.append(Problem(number, 1, f"the cell's id {cid!r} is also the id of "
                                                   f"cell {seen[cid]}"))
            elif isinstance(cid, str):
                seen[cid] = number
    return problems


def _invalid(e: nbformat.ValidationError) -> Problem:
    """What nbformat rejected, at the cell it rejected when it names one."""
    path = list(e.absolute_path)
    cell = path[1] + 1 if len(path) > 1 and path[0] == "cells" and isinstance(path[1], int) \
        else None
    where = "/".join(map(str, path[2:] if cell else path))
    message = e.message if len(e.message) <= MESSAGE_MAX else \
        e.message[:MESSAGE_MAX] + "…"
    return Problem(cell, 1, f"nbformat rejects the notebook: {message}"
                            + (f" (at {where})" if where else ""))


def _language(metadata: dict) -> list[Problem]:
    named = {metadata.get("kernelspec", {}).get("language"),
             metadata.get("language_info", {}).get("name")} - {None}
    return [Problem(None, 1, f"the notebook's kernel language is {name!r}: a lab's cells run "
                             f"in a {KERNEL_LANGUAGE} kernel")
            for name in sorted(str(n) for n in named) if name.lower() != KERNEL_LANGUAGE]


def _markdown(source: str) -> tuple[str, tuple[int, str] | None]:
    """A markdown cell's text, or where a fence in it is left open (it would swallow the
    cells after it)."""
    for fence in fences(source):
        if not fence.closed:
            return "", (fence.line, "this fenced block is never closed in its cell: close "
                                    "it with a line of its own")
    return source, None


def _text(source) -> str:
    return "".join(source) if isinstance(source, list) else source


def _longest_backticks(source: str) -> int:
    return max((len(m) for m in re.findall(r"`+", source)), default=0)
