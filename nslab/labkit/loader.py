"""Reading a lab folder (docs/authoring.md): load it, or report every error as file:line.

A lab is read as YAML nodes rather than plain data so that every key and item keeps the
line it came from: an author who misspells `hints` must be told where, not find out when a
learner misses a hint. Loading never raises for a broken lab; it returns a `Lab` whose
`errors` say what is wrong, and the web app shows such a lab as unavailable.
"""

from __future__ import annotations

import difflib
import importlib.util
import random
import re
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType

import yaml

from .model import (ASSET_PART_RE, ASSET_TYPES, DEFAULT_HINT_COST, DEFAULT_TIMEOUT,
                    ITEM_ID_RE, LAB_ID_RE, MAX_TIMEOUT, NOTEBOOK_SUFFIX, ONLY_CONDITIONS,
                    Exercise, Lab, LabError, Quiz, Step, Wrong)
from .notebook import read_notebook
from .params import (CELL_INFO, END_DIRECTIVE_RE, EXERCISE_DIRECTIVE_RE, ONLY_DIRECTIVE_RE,
                     PLACEHOLDER_RE, directive_lines, draw_params, expand, fences, text_lines)

PARAM_RE = re.compile(r"^[a-z_][a-z0-9_]{0,31}$")
SANDBOX_KEYS = {"image", "cpus", "memory", "pids", "disk", "swap", "cpu_weight", "cpuset",
                "containers"}
PARAM_KINDS = {"choice", "word", "int", "token"}
# A Markdown image or link, `![alt](url` / `[text](url`, and a reference definition.
LINK_RE = re.compile(r"(!?)\[[^\]]*\]\(\s*<?([^)\s>]+)")
REFERENCE_RE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)")
SCHEME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


# ----------------------------------------------------------------- YAML with line numbers

class Node:
    """A YAML value with where it came from (1-based line)."""

    __slots__ = ("value", "line")

    def __init__(self, value, line: int):
        self.value = value
        self.line = line


def _compose(text: str, file: str) -> Node:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return Node({}, 1)
        return _convert(loader, root, file)
    finally:
        loader.dispose()


def _convert(loader, node, file: str) -> Node:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, tuple[Node, int]] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise _Bad(file, key_node.start_mark.line + 1, f"key {key!r} is not a string")
            if key in out:
                raise _Bad(file, key_node.start_mark.line + 1, f"key {key!r} appears twice")
            out[key] = _convert(loader, value_node, file)
            out[key].line = key_node.start_mark.line + 1  # where an author looks for it
        return Node(out, line)
    if isinstance(node, yaml.SequenceNode):
        return Node([_convert(loader, item, file) for item in node.value], line)
    return Node(loader.construct_object(node, deep=True), line)


class _Bad(Exception):
    def __init__(self, file: str, line: int, message: str):
        super().__init__(message)
        self.error = LabError(file, line, message)


def plain(node: Node):
    """The Python value of a node tree, without line numbers."""
    if isinstance(node.value, dict):
        return {k: plain(v) for k, v in node.value.items()}
    if isinstance(node.value, list):
        return [plain(v) for v in node.value]
    return node.value


# ----------------------------------------------------------------- loading

class _Reader:
    """Reads one lab folder, collecting errors instead of stopping at the first."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.errors: list[LabError] = []
        self.meta_file = f"{folder.name}/lab.yaml"
        # Per exercise, its texts with the line of their key: what the learner reads (text,
        # hints, choices, walkthrough, quiz feedback) and what stays on the server.
        self.learner_texts: dict[str, list[tuple[str, int]]] = {}
        self.server_texts: dict[str, list[tuple[str, int]]] = {}
        # Per notebook step's file: the (cell, line in it) of each line of its Markdown.
        self.origins: dict[str, list[tuple[int, int]]] = {}

    def error(self, line: int, message: str, file: str | None = None) -> None:
        file = file or self.meta_file
        origins = self.origins.get(file)
        if origins and 1 <= line <= len(origins):
            cell, line = origins[line - 1]
            self.errors.append(LabError(file, line, message, cell))
        else:
            self.errors.append(LabError(file, line, message))

    def mapping(self, node: Node, allowed: set[str], required: set[str], what: str) -> dict:
        if not isinstance(node.value, dict):
            self.error(node.line, f"{what} must be a mapping of keys to values")
            return {}
        for key, value in node.value.items():
            if key not in allowed:
                close = _closest(key, allowed)
                self.error(value.line, f"unknown key {key!r} in {what}"
                           + (f" (did you mean {close!r}?)" if close else ""))
        for key in sorted(required - set(node.value)):
            self.error(node.line, f"{what} needs {key!r}")
        return {k: v for k, v in node.value.items() if k in allowed}

    def text(self, node: Node | None, what: str, *, required: bool = True) -> str:
        if node is None:
            return ""
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return str(node.value)
        if not isinstance(node.value, str) or (required and not node.value.strip()):
            self.error(node.line, f"{what} must be a non-empty string")
            return ""
        return node.value

    def number(self, node: Node | None, what: str, low: float, high: float, default,
               integer: bool = False):
        if node is None:
            return default
        value = node.value
        ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
        if not ok or not low <= value <= high:
            self.error(node.line, f"{what} must be {'an integer' if integer else 'a number'} "
                                  f"from {low:g} to {high:g}")
            return default
        return value

    def read(self, rel: str, line: int, what: str) -> str | None:
        """A file of the lab by its path relative to the folder, never outside it."""
        path = (self.folder / rel)
        try:
            inside = path.resolve().is_relative_to(self.folder.resolve())
        except OSError:
            inside = False
        if ".." in Path(rel).parts or Path(rel).is_absolute() or not inside:
            self.error(line, f"{what} {rel!r} must be a path inside the lab folder")
            return None
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.error(line, f"{what} {rel!r} does not exist")
        except (OSError, UnicodeDecodeError) as e:
            self.error(line, f"{what} {rel!r} cannot be read: {e}")
        return None

    def script(self, node: Node | None, what: str) -> str | None:
        """A shell script given inline, or as the path of a file ending in .sh."""
        if node is None:
            return None
        text = self.text(node, what)
        if re.fullmatch(r"[\w./-]+\.sh", text.strip()):
            return self.read(text.strip(), node.line, what)
        return text


def _closest(word: str, choices: set[str]) -> str | None:
    match = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.7)
    return match[0] if match else None


LAB_KEYS = {"id", "title", "summary", "minutes", "sandbox", "setup", "params", "steps",
            "exercises"}
STEP_KEYS = {"id", "title", "file"}
EXERCISE_KEYS = {"id", "title", "points", "text", "hints", "check", "timeout", "solution",
                 "wrong", "quiz", "attempts", "hint_cost", "walkthrough"}
QUIZ_KEYS = {"choices", "answer", "pattern", "check"}
WRONG_KEYS = {"run", "answer", "feedback"}


def load_lab(folder: str | Path) -> Lab:
    """The lab in `folder`, with every problem found listed in `.errors`."""
    folder = Path(folder)
    lab = Lab(id=folder.name, path=folder)
    r = _Reader(folder)
    if not LAB_ID_RE.match(folder.name):
        r.error(1, f"the folder name {folder.name!r} is not a valid lab id "
                   "(lower-case letters, digits and '-')")
    source = r.read("lab.yaml", 1, "metadata file")
    if source is None:
        lab.errors = r.errors
        return lab
    try:
        root = _compose(source, r.meta_file)
    except _Bad as e:
        r.errors.append(e.error)
        lab.errors = r.errors
        return lab
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        r.error(mark.line + 1 if mark else 1, f"not valid YAML: {getattr(e, 'problem', e)}")
        lab.errors = r.errors
        return lab
    top = r.mapping(root, LAB_KEYS, {"id", "title", "steps", "exercises"}, "the lab")
    if "id" in top and r.text(top["id"], "id") != folder.name:
        r.error(top["id"].line, f"id {top['id'].value!r} must equal the folder name "
                                f"{folder.name!r}")
    lab.title = r.text(top.get("title"), "title")
    lab.summary = r.text(top.get("summary"), "summary", required=False)
    lab.minutes = r.number(top.get("minutes"), "minutes", 1, 600, None, integer=True)
    lab.sandbox = _sandbox(r, top.get("sandbox"))
    if "setup" in top:
        lab.setup = r.script(top["setup"], "setup")
    lab.params, lab.hidden = _params(r, top.get("params"))
    lab.steps = _steps(r, top.get("steps"))
    lab.exercises = _exercises(r, top.get("exercises"), lab.params)
    _place(r, lab)
    _check_placeholders(r, lab)
    _check_cells(r, lab)
    _check_assets(r, lab)
    lab.checks = _load_checks(r, lab)
    lab.errors = r.errors
    return lab


def _sandbox(r: _Reader, node: Node | None) -> dict:
    if node is None:
        return {}
    values = r.mapping(node, SANDBOX_KEYS, set(), "sandbox")
    out = {}
    for key, value in values.items():
        if key == "containers":
            if not isinstance(value.value, bool):
                r.error(value.line, "sandbox containers must be true or false")
                continue
        elif not isinstance(value.value, (str, int, float)) or isinstance(value.value, bool):
            r.error(value.line, f"sandbox {key} must be a number or a string like 512m")
            continue
        out[key] = value.value
    return out


def _params(r: _Reader, node: Node | None) -> tuple[dict[str, dict], frozenset[str]]:
    if node is None:
        return {}, frozenset()
    if not isinstance(node.value, dict):
        r.error(node.line, "params must be a mapping of names to kinds")
        return {}, frozenset()
    out, hidden = {}, set()
    for name, spec in node.value.items():
        if not PARAM_RE.match(name):
            r.error(spec.line, f"param name {name!r} must be lower_case letters, digits, _")
            continue
        kinds = r.mapping(spec, PARAM_KINDS | {"hidden"}, set(), f"param {name!r}")
        flag = kinds.pop("hidden", None)
        if flag is not None and not isinstance(flag.value, bool):
            r.error(flag.line, f"param {name!r}: hidden must be true or false")
        elif flag is not None and flag.value:
            hidden.add(name)
        if len(kinds) != 1:
            r.error(spec.line, f"param {name!r} needs exactly one of "
                               f"{', '.join(sorted(PARAM_KINDS))}")
            continue
        (kind, value), = kinds.items()
        raw = plain(value)
        if kind in ("choice", "word"):
            if not isinstance(raw, list) or not raw or not all(
                    isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in raw):
                r.error(value.line, f"param {name!r}: {kind} needs a non-empty list of values")
                continue
        elif kind == "int":
            if not (isinstance(raw, list) and len(raw) == 2 and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in raw)
                    and raw[0] <= raw[1]):
                r.error(value.line, f"param {name!r}: int needs [low, high]")
                continue
        elif not (isinstance(raw, int) and not isinstance(raw, bool) and 4 <= raw <= 64):
            r.error(value.line, f"param {name!r}: token needs a length from 4 to 64")
            continue
        out[name] = {kind: raw}
    return out, frozenset(hidden & set(out))


def _steps(r: _Reader, node: Node | None) -> list[Step]:
    if node is None:
        return []
    if not isinstance(node.value, list) or not node.value:
        r.error(node.line, "steps must be a non-empty list")
        return []
    steps, seen = [], set()
    for item in node.value:
        values = r.mapping(item, STEP_KEYS, STEP_KEYS, "a step")
        if set(values) != STEP_KEYS:
            continue
        sid = r.text(values["id"], "step id")
        if not ITEM_ID_RE.match(sid):
            r.error(values["id"].line, f"step id {sid!r} must be lower-case letters, digits, '-'")
        elif sid in seen:
            r.error(values["id"].line, f"step id {sid!r} is used twice")
        seen.add(sid)
        rel = r.text(values["file"], "step file")
        source = r.read(rel, values["file"].line, "step file") if rel else None
        step = Step(sid, r.text(values["title"], "step title"), rel, source or "")
        if source is not None and rel.endswith(NOTEBOOK_SUFFIX):
            _notebook_step(r, step)
        steps.append(step)
    return steps


def _notebook_step(r: _Reader, step: Step) -> None:
    """A notebook's cells as the step's Markdown; what is wrong with it, by cell."""
    file = f"{r.folder.name}/{step.file}"
    notebook = read_notebook(step.source)
    for problem in notebook.problems:
        r.errors.append(LabError(file, problem.line, problem.message, problem.cell))
    step.source, step.origins = notebook.source, notebook.origins
    r.origins[file] = notebook.origins


def _exercises(r: _Reader, node: Node | None, params: dict) -> dict[str, Exercise]:
    if node is None:
        return {}
    if not isinstance(node.value, list) or not node.value:
        r.error(node.line, "exercises must be a non-empty list")
        return {}
    out: dict[str, Exercise] = {}
    for item in node.value:
        v = r.mapping(item, EXERCISE_KEYS, {"id", "title", "points", "text"}, "an exercise")
        if "id" not in v:
            continue
        eid = r.text(v["id"], "exercise id")
        if not ITEM_ID_RE.match(eid):
            r.error(v["id"].line, f"exercise id {eid!r} must be lower-case letters, digits, '-'")
            continue
        if eid in out:
            r.error(v["id"].line, f"exercise id {eid!r} is used twice")
            continue
        ex = Exercise(id=eid, title=r.text(v.get("title"), "title"),
                      points=r.number(v.get("points"), "points", 0, 1000, 1, integer=True),
                      text=r.text(v.get("text"), "text"), line=item.line,
                      timeout=float(r.number(v.get("timeout"), "timeout", 1, MAX_TIMEOUT,
                                             DEFAULT_TIMEOUT)),
                      attempts=r.number(v.get("attempts"), "attempts", 1, 100, None,
                                        integer=True),
                      hint_cost=float(r.number(v.get("hint_cost"), "hint_cost", 0, 1,
                                               DEFAULT_HINT_COST)))
        learner = r.learner_texts[eid] = [(ex.title, v.get("title", item).line),
                                          (ex.text, v.get("text", item).line)]
        server = r.server_texts[eid] = []
        if "hints" in v:
            if isinstance(v["hints"].value, list):
                ex.hints = [r.text(h, "a hint") for h in v["hints"].value]
                learner += [(h, n.line) for h, n in zip(ex.hints, v["hints"].value)]
            else:
                r.error(v["hints"].line, "hints must be a list of Markdown strings")
        if "walkthrough" in v:
            ex.walkthrough = r.text(v["walkthrough"], "walkthrough")
            learner.append((ex.walkthrough, v["walkthrough"].line))
        if "check" in v:
            ex.check = r.text(v["check"], "check")
        if "quiz" in v:
            ex.quiz = _quiz(r, v["quiz"], ex)
            where = v["quiz"].value.get("choices", v["quiz"]) \
                if isinstance(v["quiz"].value, dict) else v["quiz"]
            learner += [(c, where.line) for c in ex.quiz.choices or []]
            server += [(t, v["quiz"].line) for t in (ex.quiz.answer, ex.quiz.pattern) if t]
        elif "check" not in v:
            ex.check = eid.replace("-", "_")
        if ex.is_choice and ex.graded_attempts >= len(ex.quiz.choices):
            r.error(v.get("attempts", v["quiz"]).line,
                    f"exercise {eid!r}: with {ex.graded_attempts} graded tries a learner can "
                    f"try each of its {len(ex.quiz.choices)} choices for full points; "
                    f"`attempts:` must be less than {len(ex.quiz.choices)}")
        if "solution" in v:
            ex.solution = r.script(v["solution"], "solution")
            server.append((ex.solution, v["solution"].line))
        elif ex.quiz is None or ex.check:
            r.error(item.line, f"exercise {eid!r} needs a reference solution (`solution:`)")
        ex.wrong = _wrongs(r, v.get("wrong"), ex, item.line)
        for w in ex.wrong:
            # A wrong answer's feedback is what the learner reads after it; its script or
            # answer stays with the author.
            learner.append((w.feedback, w.line))
            server += [(t, w.line) for t in (w.run, w.answer) if t]
        if ex.check and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ex.check):
            r.error(v.get("check", item).line, f"check {ex.check!r} is not a Python name")
        out[eid] = ex
    return out


def _quiz(r: _Reader, node: Node, ex: Exercise) -> Quiz:
    v = r.mapping(node, QUIZ_KEYS, set(), f"the quiz of {ex.id!r}")
    quiz = Quiz()
    if "choices" in v:
        if not isinstance(v["choices"].value, list) or len(v["choices"].value) < 2:
            r.error(v["choices"].line, "choices must be a list of at least two answers")
        else:
            quiz.choices = [r.text(c, "a choice") for c in v["choices"].value]
    if "answer" in v:
        quiz.answer = r.text(v["answer"], "answer")
    if "pattern" in v:
        quiz.pattern = r.text(v["pattern"], "pattern")
        try:
            re.compile(quiz.pattern)
        except re.error as e:
            r.error(v["pattern"].line, f"pattern is not a valid regular expression: {e}")
    if "check" in v:
        ex.check = r.text(v["check"], "check")
    ways = sum(x is not None for x in (quiz.answer, quiz.pattern, ex.check))
    if ways != 1:
        r.error(node.line, f"the quiz of {ex.id!r} needs exactly one of answer, pattern, check")
    if quiz.choices is not None and quiz.answer not in quiz.choices:
        r.error(node.line, f"the quiz of {ex.id!r}: answer must be one of its choices")
    return quiz


def _wrongs(r: _Reader, node: Node | None, ex: Exercise, line: int) -> list[Wrong]:
    if node is None or not isinstance(node.value, list) or not node.value:
        r.error(node.line if node else line,
                f"exercise {ex.id!r} needs at least one typical wrong answer (`wrong:`)")
        return []
    out = []
    for item in node.value:
        v = r.mapping(item, WRONG_KEYS, {"feedback"}, "a wrong answer")
        key = "answer" if ex.quiz is not None else "run"
        other = "run" if key == "answer" else "answer"
        # A quiz graded against the sandbox (`check:`) may first set the sandbox up to
        # mislead its check (`run:`), then answer: the replay does both on a fresh sandbox.
        both = key == "answer" and ex.check is not None
        if other in v and not both:
            r.error(v[other].line, f"a wrong answer of a {'quiz' if ex.quiz else 'task'} "
                                   f"uses {key!r}, not {other!r}")
        if key not in v:
            r.error(item.line, f"a wrong answer needs {key!r}")
            continue
        values = {key: r.script(v[key], key) if key == "run" else r.text(v[key], key)}
        if both and "run" in v:
            values["run"] = r.script(v["run"], "run")
        out.append(Wrong(line=item.line, feedback=r.text(v.get("feedback"), "feedback"),
                         **values))
    return out


DIRECTIVES = ("`::: exercise ID`, `::: only cgroup-v1` or `::: only cgroup-v2` ... `:::`")


def _place(r: _Reader, lab: Lab) -> None:
    """Find each `::: exercise ID` directive (every exercise is placed exactly once) and
    check the `::: only CONDITION` ... `:::` blocks."""
    placed: dict[str, str] = {}
    for step in lab.steps:
        file = f"{lab.id}/{step.file}"
        block: tuple[int, str] | None = None  # the open `::: only` block: line, condition
        nested = 0  # `:::` lines that close a wrongly nested block, already reported
        for number, stripped in directive_lines(step.source):
            m = EXERCISE_DIRECTIVE_RE.match(stripped)
            only = ONLY_DIRECTIVE_RE.match(stripped)
            if only:
                condition = (only.group(1) or "").strip()
                if block is not None:
                    r.error(number, f"an `::: only` block cannot hold another: the block of "
                                    f"line {block[0]} is still open (close it with `:::`)",
                            file)
                    nested += 1
                    continue
                if condition not in ONLY_CONDITIONS:
                    r.error(number, f"unknown condition {condition!r} in `::: only` (known: "
                                    f"{', '.join(ONLY_CONDITIONS)})", file)
                else:
                    step.conditions.add(condition)
                block = (number, condition)
            elif END_DIRECTIVE_RE.match(stripped):
                if nested:
                    nested -= 1
                elif block is None:
                    r.error(number, "`:::` closes no `::: only` block", file)
                else:
                    block = None
            elif not m:
                r.error(number, f"unknown directive {stripped!r} (the directives are "
                                f"{DIRECTIVES})", file)
            elif block is not None:
                r.error(number, f"exercise {m.group(1)!r} is inside the `::: only "
                                f"{block[1]}` block of line {block[0]}: every learner must "
                                "meet every exercise, so place it outside", file)
            elif m.group(1) not in lab.exercises:
                r.error(number, f"directive names exercise {m.group(1)!r}, which lab.yaml "
                                "does not define", file)
            elif m.group(1) in placed:
                r.error(number, f"exercise {m.group(1)!r} is already placed in step "
                                f"{placed[m.group(1)]!r}", file)
            else:
                placed[m.group(1)] = step.id
                step.exercises.append(m.group(1))
                lab.exercises[m.group(1)].step = step.id
        if block is not None:
            r.error(block[0], f"the `::: only {block[1]}` block is never closed: end it with "
                              "`:::` on a line of its own", file)
    for ex in lab.exercises.values():
        if ex.id not in placed:
            r.error(ex.line, f"exercise {ex.id!r} is not placed in any step: add "
                             f"`::: exercise {ex.id}` on a line of its own in a step")


def _check_placeholders(r: _Reader, lab: Lab) -> None:
    """Every `{{ name }}` names a param; a hidden one only in what stays on the server."""
    def scan(text: str | None, file: str, first_line: int, per_line: bool,
             learner: bool) -> None:
        for m in PLACEHOLDER_RE.finditer(text or ""):
            line = first_line + (text.count("\n", 0, m.start()) if per_line else 0)
            if m.group(1) not in lab.params:
                r.error(line, f"{{{{ {m.group(1)} }}}} names no param (params: "
                              f"{', '.join(sorted(lab.params)) or 'none'})", file)
            elif learner and m.group(1) in lab.hidden:
                r.error(line, f"{{{{ {m.group(1)} }}}} is a hidden param: its value never "
                              "reaches the learner, so text the learner reads cannot show it "
                              "(use it in checks.py, setup, a solution or a quiz answer)", file)

    for step in lab.steps:
        scan(step.source, f"{lab.id}/{step.file}", 1, True, True)
    for eid in lab.exercises:
        for text, line in r.learner_texts.get(eid, []):
            scan(text, r.meta_file, line, False, True)
        for text, line in r.server_texts.get(eid, []):
            scan(text, r.meta_file, line, False, False)


def _check_cells(r: _Reader, lab: Lab) -> None:
    """Every `python cell` is closed and is Python (compiled with one learner's values, as
    the learner gets it); a fence whose info string looks like a mistyped cell is
    reported, or the author would find a cell shown as plain code."""
    values = draw_params(lab.params, random.Random(0))
    for step in lab.steps:
        file = f"{lab.id}/{step.file}"
        for fence in fences(step.source):
            if not fence.is_cell:
                if _mistyped_cell(fence.info):
                    r.error(fence.line, f"unknown info string {fence.info!r}: a runnable cell "
                                        f"is marked ```{CELL_INFO} (plain ```python stays "
                                        "plain code)", file)
                continue
            if not fence.closed:
                r.error(fence.line, f"this `{CELL_INFO}` block is never closed: end it with "
                                    "a fence of its own", file)
                continue
            try:
                caught = _compile(expand(fence.body, values), file)
            except SyntaxError as e:
                r.error(fence.line + (e.lineno or 1), f"the cell is not valid Python: {e.msg}",
                        file)
                continue
            except ValueError as e:  # a NUL byte
                r.error(fence.line, f"the cell cannot be compiled: {e}", file)
                continue
            for w in caught:
                r.error(fence.line + w.lineno, f"the cell compiles with a warning: {w.message}",
                        file)


# warnings.catch_warnings changes process-wide state and restores it on exit: two threads
# loading labs at once (the web app) must not interleave their saves and restores.
_compile_lock = threading.Lock()


def _compile(source: str, file: str) -> list[warnings.WarningMessage]:
    """Compile a cell; the warnings the compiler gave about it (an invalid escape, `is`
    with a literal: the author's bugs too), recorded rather than printed or raised."""
    with _compile_lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compile(source, file, "exec", dont_inherit=True)
    return [w for w in caught if w.filename == file and issubclass(
        w.category, (SyntaxWarning, DeprecationWarning))]


# The languages an author would mark a Python block with.
PYTHON_NAMES = {"python", "python3", "py", "py3", "ipython", "ipython3"}


def _mistyped_cell(info: str) -> bool:
    """Whether an info string that is not exactly `python cell` was likely meant to be:
    `python cel`, `python-cell`, `python3 cell`, `py cells`, `sh cell`."""
    words = re.split(r"[\s_-]+", info.lower().strip())
    if not info.strip() or info.split() == CELL_INFO.split():
        return False
    squashed = re.sub(r"[^a-z0-9]", "", info.lower())
    if squashed.endswith(("cell", "cells")) or difflib.SequenceMatcher(
            None, squashed, CELL_INFO.replace(" ", "")).ratio() >= 0.8:
        return True
    return "cell" in words[1:] or (words[0] in PYTHON_NAMES and any(
        difflib.get_close_matches(w, ["cell"], n=1, cutoff=0.6) for w in words[1:]))


def _check_assets(r: _Reader, lab: Lab) -> None:
    """Every `assets/...` a learner's text points at is a file there of a type the web app
    serves; an image is never a path outside assets/."""
    base = lab.path / "assets"

    def check(url: str, image: bool, file: str, line: int) -> None:
        path = url.split("#", 1)[0].split("?", 1)[0]
        if path.startswith("assets/"):
            parts = path.split("/")[1:]
            target = base.joinpath(*parts)
            if not all(ASSET_PART_RE.match(p) for p in parts):
                r.error(line, f"asset {path!r}: each part of its path must be letters, "
                              "digits, '.', '_' or '-', not starting with '.'", file)
            elif target.suffix.lower() not in ASSET_TYPES:
                r.error(line, f"asset {path!r}: the web app serves only "
                              f"{', '.join(sorted(ASSET_TYPES))} files", file)
            elif not target.is_file() or not target.resolve().is_relative_to(base.resolve()):
                r.error(line, f"asset {path!r} does not exist (looked for "
                              f"{lab.id}/{path})", file)
        elif image and not SCHEME_RE.match(url) and not url.startswith(("/", "#")):
            r.error(line, f"image {url!r}: a lab's pictures live in its assets/ folder "
                          f"(write assets/{url.lstrip('./')})", file)

    def scan(text: str | None, file: str, first_line: int, per_line: bool) -> None:
        for number, line in text_lines(text or ""):
            where = first_line + (number - 1 if per_line else 0)
            for m in LINK_RE.finditer(line):
                check(m.group(2), m.group(1) == "!", file, where)
            if m := REFERENCE_RE.match(line):
                check(m.group(1), False, file, where)

    for step in lab.steps:
        scan(step.source, f"{lab.id}/{step.file}", 1, True)
    for eid in lab.exercises:
        for text, line in r.learner_texts.get(eid, []):
            scan(text, r.meta_file, line, False)


def _load_checks(r: _Reader, lab: Lab) -> ModuleType | None:
    needed = [ex for ex in lab.exercises.values() if ex.check]
    path = lab.path / "checks.py"
    if not path.is_file():
        for ex in needed:
            r.error(ex.line, f"exercise {ex.id!r} needs check {ex.check!r} but the lab has "
                             "no checks.py")
        return None
    try:
        module = _import(path, lab.id)
    except SyntaxError as e:
        r.error(e.lineno or 1, f"syntax error: {e.msg}", f"{lab.id}/checks.py")
        return None
    except Exception as e:  # the author's module failed at import: say where
        tb = e.__traceback__
        line = 1
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == str(path):
                line = tb.tb_lineno
            tb = tb.tb_next
        r.error(line, f"importing checks.py failed: {type(e).__name__}: {e}",
                f"{lab.id}/checks.py")
        return None
    for ex in needed:
        fn = getattr(module, ex.check, None)
        if not callable(fn):
            r.error(ex.line, f"exercise {ex.id!r}: checks.py has no function {ex.check!r}")
    return module


_import_lock = threading.Lock()


def _import(path: Path, lab_id: str) -> ModuleType:
    name = f"nslab_lab_checks_{lab_id.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    with _import_lock:
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return module


def validate(paths: list[Path]) -> list[Lab]:
    """Each lab folder of `paths`, loaded, with its errors."""
    return [load_lab(p) for p in paths]
