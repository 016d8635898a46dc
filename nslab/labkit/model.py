"""What a lab is (docs/authoring.md): the data a loaded lab folder becomes.

A `Lab` holds its steps and exercises as the author wrote them, with `{{ param }}`
placeholders unexpanded; `errors` lists what is wrong with it, each with its file:line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

# A lab id names a folder under labs/, so it must never hold a path separator or "..";
# step and exercise ids follow the same rule (they appear in URLs).
LAB_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
ITEM_ID_RE = LAB_ID_RE
# A learner's sandbox unless the lab's `sandbox:` says otherwise.
DEFAULT_SANDBOX = {"cpus": 1.0, "memory": "512m", "pids": 512, "disk": "1g"}
# What a lab with `sandbox: containers: true` gets unless it says otherwise: seeding and
# running images peaked at 482 of 512 MiB, and the images live on the sandbox's disk.
CONTAINERS_SANDBOX = {"memory": "1g", "disk": "2g"}
DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 60.0
# Each opened hint takes this share of an exercise's points off what a later try earns.
DEFAULT_HINT_COST = 0.25
# A multiple-choice quiz can be brute-forced by trying each choice: only the first try
# earns points unless the exercise says otherwise (`attempts:`).
CHOICE_QUIZ_ATTEMPTS = 1
# `::: only CONDITION` blocks in steps: the condition, and the host fact it names.
ONLY_CONDITIONS = {"cgroup-v1": 1, "cgroup-v2": 2}
# What a lab's assets/ folder may serve, by suffix: images a browser shows, nothing it runs
# (an SVG is served with a policy that blocks its scripts).
ASSET_TYPES = {".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg",
               ".jpeg": "image/jpeg"}
# A step file that is a Jupyter notebook (nbformat v4) rather than Markdown.
NOTEBOOK_SUFFIX = ".ipynb"
# One part of an asset's path: no leading dot, so never "..", never a hidden file.
ASSET_PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class LabError:
    file: str
    line: int  # in a notebook step (`cell` set): the line within that cell
    message: str
    cell: int | None = None  # a notebook step's cell, counted from 1 as Jupyter shows them

    def __str__(self) -> str:
        if self.cell is None:
            return f"{self.file}:{self.line}: {self.message}"
        where = f"cell {self.cell}" + (f", line {self.line}" if self.line > 1 else "")
        return f"{self.file}: {where}: {self.message}"


@dataclass
class Step:
    id: str
    title: str
    file: str
    source: str
    exercises: list[str] = field(default_factory=list)  # in the order they are placed
    conditions: set[str] = field(default_factory=set)  # of its `::: only` blocks
    # A notebook step (`.ipynb`): its `source` is Markdown made from its cells (a code cell
    # becomes a `python cell` block); per line of it, (cell number from 1, line in it).
    origins: list[tuple[int, int]] | None = None

    @property
    def notebook(self) -> bool:
        return self.origins is not None


@dataclass
class Wrong:
    line: int
    feedback: str
    run: str | None = None
    answer: str | None = None


@dataclass
class Quiz:
    choices: list[str] | None = None
    answer: str | None = None
    pattern: str | None = None


@dataclass
class Exercise:
    id: str
    title: str
    points: int
    text: str
    line: int
    hints: list[str] = field(default_factory=list)
    check: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    solution: str | None = None
    wrong: list[Wrong] = field(default_factory=list)
    quiz: Quiz | None = None
    step: str | None = None
    attempts: int | None = None  # as written in lab.yaml; see graded_attempts
    hint_cost: float = DEFAULT_HINT_COST
    walkthrough: str | None = None

    @property
    def kind(self) -> str:
        return "quiz" if self.quiz is not None else "task"

    @property
    def is_choice(self) -> bool:
        return self.quiz is not None and self.quiz.choices is not None

    @property
    def graded_attempts(self) -> int | None:
        """How many tries can earn points (None: every try)."""
        if self.attempts is not None:
            return self.attempts
        return CHOICE_QUIZ_ATTEMPTS if self.is_choice else None

    @property
    def hint_points(self) -> float:
        """The points one opened hint takes off."""
        return round(self.points * self.hint_cost, 2)


@dataclass
class Lab:
    id: str
    path: Path
    title: str = ""
    summary: str = ""
    minutes: int | None = None
    sandbox: dict = field(default_factory=dict)
    setup: str | None = None
    params: dict[str, dict] = field(default_factory=dict)  # name -> {kind: spec}
    hidden: frozenset[str] = frozenset()  # params whose values never leave the server
    steps: list[Step] = field(default_factory=list)
    exercises: dict[str, Exercise] = field(default_factory=dict)
    errors: list[LabError] = field(default_factory=list)
    checks: ModuleType | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def sandbox_limits(self) -> dict:
        """The create() arguments for a sandbox of this lab."""
        extra = CONTAINERS_SANDBOX if self.sandbox.get("containers") else {}
        return {**DEFAULT_SANDBOX, **extra, **self.sandbox}

    @property
    def max_points(self) -> int:
        return sum(e.points for e in self.exercises.values())

    def ordered_exercises(self) -> list[Exercise]:
        """Exercises in the order a learner meets them in the steps."""
        return [self.exercises[e] for s in self.steps for e in s.exercises if e in self.exercises]

    @property
    def conditional(self) -> bool:
        """Whether a step has `::: only` blocks (its text depends on the host)."""
        return any(step.conditions for step in self.steps)

    def visible_params(self, params: dict) -> dict:
        """The learner's values that their text may show: every one but the hidden."""
        return {k: v for k, v in params.items() if k not in self.hidden}

    def hidden_values(self, params: dict) -> list[str]:
        return [str(params[k]) for k in sorted(self.hidden) if k in params]

    def check_function(self, exercise: Exercise):
        return getattr(self.checks, exercise.check, None) if exercise.check else None
