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
DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 60.0


@dataclass(frozen=True)
class LabError:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class Step:
    id: str
    title: str
    file: str
    source: str
    exercises: list[str] = field(default_factory=list)  # in the order they are placed


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

    @property
    def kind(self) -> str:
        return "quiz" if self.quiz is not None else "task"


@dataclass
class Lab:
    id: str
    path: Path
    title: str = ""
    summary: str = ""
    minutes: int | None = None
    sandbox: dict = field(default_factory=dict)
    setup: str | None = None
    params: dict[str, dict] = field(default_factory=dict)
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
        return {**DEFAULT_SANDBOX, **self.sandbox}

    @property
    def max_points(self) -> int:
        return sum(e.points for e in self.exercises.values())

    def ordered_exercises(self) -> list[Exercise]:
        """Exercises in the order a learner meets them in the steps."""
        return [self.exercises[e] for s in self.steps for e in s.exercises if e in self.exercises]

    def check_function(self, exercise: Exercise):
        return getattr(self.checks, exercise.check, None) if exercise.check else None
