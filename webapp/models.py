"""Database models (SQLAlchemy 2 typed style). Schema changes go through webapp/migrations."""

from __future__ import annotations

import enum
import re
import secrets
from datetime import datetime, timezone

from flask import current_app
from flask_login import UserMixin
from sqlalchemy import (JSON, Boolean, DateTime, Enum, Float, ForeignKey, Index, Integer, String,
                        Text, UniqueConstraint, select)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import db

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,31}$")
# Join codes are read aloud in a classroom: no I or O (they look like 1 and 0).
JOIN_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
JOIN_CODE_RE = re.compile(rf"^[{JOIN_LETTERS}]{{4}}-[0-9]{{4}}$")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(at: datetime) -> datetime:
    """A datetime read back from the database, made aware: SQLite gives back naive
    datetimes, and everything stored is UTC."""
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as the lower-case value in a VARCHAR (no native enum type, no CHECK), so adding a
    # member later needs no table rebuild on SQLite.
    return Enum(cls, native_enum=False, create_constraint=False, length=16,
                values_callable=lambda e: [m.value for m in e])


class Role(enum.StrEnum):
    INSTRUCTOR = "instructor"
    LEARNER = "learner"


class SandboxState(enum.StrEnum):
    CREATING = "creating"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


def normalize_username(name: str) -> str:
    return name.strip().lower()


def normalize_join_code(code: str) -> str:
    """'abcd 1234', 'abcd1234' and ' ABCD-1234 ' all mean 'ABCD-1234'."""
    compact = re.sub(r"[\s-]", "", code).upper()
    return f"{compact[:4]}-{compact[4:]}" if len(compact) == 8 else compact


def new_join_code() -> str:
    letters = "".join(secrets.choice(JOIN_LETTERS) for _ in range(4))
    return f"{letters}-{secrets.randbelow(10_000):04d}"


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(_enum(Role))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Part of the id the session cookie carries (get_id): signing out bumps it, and every
    # cookie issued before, copies included, stops working (auth.load_user).
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    teaching: Mapped[list[Course]] = relationship(back_populates="instructor",
                                                  order_by="Course.created")
    enrollments: Mapped[list[Enrollment]] = relationship(back_populates="user",
                                                         cascade="all, delete-orphan",
                                                         order_by="Enrollment.created")

    def get_id(self) -> str:
        """What Flask-Login keeps in the session: the id and the session version."""
        return f"{self.id}.{self.session_version}"

    def revoke_sessions(self) -> None:
        """Sign this user out everywhere: every session cookie issued so far is refused."""
        self.session_version += 1

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(
            password, method=current_app.config["PASSWORD_HASH_METHOD"])

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    @property
    def is_instructor(self) -> bool:
        return self.role == Role.INSTRUCTOR

    @classmethod
    def by_name(cls, username: str) -> User | None:
        return db.session.scalar(select(cls).where(cls.username == normalize_username(username)))

    def __repr__(self) -> str:
        return f"<User {self.username} {self.role.value}>"


class Course(db.Model):
    __tablename__ = "courses"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(120))
    join_code: Mapped[str] = mapped_column(String(9), unique=True)
    instructor_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    instructor: Mapped[User] = relationship(back_populates="teaching")
    enrollments: Mapped[list[Enrollment]] = relationship(back_populates="course",
                                                         cascade="all, delete-orphan",
                                                         order_by="Enrollment.created")
    labs: Mapped[list[CourseLab]] = relationship(back_populates="course",
                                                 cascade="all, delete-orphan",
                                                 order_by="CourseLab.position")

    @classmethod
    def by_code(cls, code: str) -> Course | None:
        return db.session.scalar(select(cls).where(cls.join_code == normalize_join_code(code)))

    staff: Mapped[list[CourseStaff]] = relationship(back_populates="course",
                                                    cascade="all, delete-orphan",
                                                    order_by="CourseStaff.created")

    def is_owned_by(self, user: User) -> bool:
        """The instructor who made the course: the only one who names its co-instructors."""
        return user.is_authenticated and self.instructor_id == user.id

    def is_taught_by(self, user: User) -> bool:
        """The course's instructor or one of its co-instructors (teaching assistants): the
        same rights on this course, and none on any other."""
        if not user.is_authenticated:
            return False
        return self.instructor_id == user.id or db.session.scalar(
            select(CourseStaff.id).where(CourseStaff.course_id == self.id,
                                         CourseStaff.user_id == user.id)) is not None

    def teacher_ids(self) -> list[int]:
        """The instructor and every co-instructor."""
        return [self.instructor_id] + [s.user_id for s in self.staff]

    def has_learner(self, user: User) -> bool:
        return user.is_authenticated and db.session.scalar(
            select(Enrollment.id).where(Enrollment.course_id == self.id,
                                        Enrollment.user_id == user.id)) is not None

    def lab(self, lab_id: str) -> CourseLab | None:
        return next((lab for lab in self.labs if lab.lab_id == lab_id), None)

    def __repr__(self) -> str:
        return f"<Course {self.id} {self.join_code}>"


class Enrollment(db.Model):
    __tablename__ = "enrollments"
    __table_args__ = (UniqueConstraint("user_id", "course_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"),
                                           index=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    user: Mapped[User] = relationship(back_populates="enrollments")
    course: Mapped[Course] = relationship(back_populates="enrollments")


class CourseStaff(db.Model):
    """A co-instructor (teaching assistant) of a course: an instructor account with the
    course's instructor's rights on this course only."""

    __tablename__ = "course_staff"
    __table_args__ = (UniqueConstraint("course_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         index=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    course: Mapped[Course] = relationship(back_populates="staff")
    user: Mapped[User] = relationship()


class HelpRequest(db.Model):
    """A learner's raised hand in a course ("Ask for help"), with an optional message.
    Open until closed; a teacher may claim it first (so two do not walk over)."""

    __tablename__ = "help_requests"
    __table_args__ = (Index("ix_help_requests_open", "course_id", "closed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    lab_id: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(String(500), default="")
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    claimed_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    claimed_by: Mapped[User | None] = relationship(foreign_keys=[claimed_by_id])


class Announcement(db.Model):
    """A teacher's message to a whole course (to_user_id None) or to one learner."""

    __tablename__ = "announcements"
    __table_args__ = (Index("ix_announcements_course", "course_id", "created"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    to_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(String(500))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    author: Mapped[User | None] = relationship(foreign_keys=[author_id])
    to_user: Mapped[User | None] = relationship(foreign_keys=[to_user_id])


class CourseLab(db.Model):
    """A lab in a course's syllabus. `lab_id` names a folder under labs/ (issue 4)."""

    __tablename__ = "course_labs"
    __table_args__ = (UniqueConstraint("course_id", "lab_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"))
    lab_id: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(default=0)

    course: Mapped[Course] = relationship(back_populates="labs")


class SandboxAssignment(db.Model):
    """Which sandbox serves one learner's lab in one course."""

    __tablename__ = "sandbox_assignments"
    __table_args__ = (UniqueConstraint("user_id", "course_id", "lab_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"),
                                           index=True)
    lab_id: Mapped[str] = mapped_column(String(64))
    sandbox_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    state: Mapped[SandboxState] = mapped_column(_enum(SandboxState),
                                                default=SandboxState.CREATING)
    last_active: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    user: Mapped[User] = relationship()
    course: Mapped[Course] = relationship()


class LearnerLab(db.Model):
    """One learner's run of a lab in a course: the values drawn for them (lab params)."""

    __tablename__ = "learner_labs"
    __table_args__ = (UniqueConstraint("user_id", "course_id", "lab_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"),
                                           index=True)
    lab_id: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    started: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ExerciseProgress(db.Model):
    """Where one learner stands on one exercise (the attempts are the history)."""

    __tablename__ = "exercise_progress"
    __table_args__ = (UniqueConstraint("user_id", "course_id", "lab_id", "exercise_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"),
                                           index=True)
    lab_id: Mapped[str] = mapped_column(String(64))
    exercise_id: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # tries that were judged
    hints_used: Mapped[int] = mapped_column(Integer, default=0)
    # The best try's points (an opened hint takes a share off, so they may be fractional)
    # and what the hints took off that try.
    points: Mapped[float] = mapped_column(Float, default=0)
    deduction: Mapped[float] = mapped_column(Float, default=0, server_default="0")
    passed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_attempt: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship()

    @property
    def status(self) -> str:
        if self.passed_at is not None:
            return "passed"
        return "failed" if self.attempts else "not_started"


class Attempt(db.Model):
    """One press of Check: when, what came out, and how many hints were open then."""

    __tablename__ = "attempts"
    __table_args__ = (Index("ix_attempts_learner", "user_id", "course_id", "lab_id",
                            "exercise_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    course_id: Mapped[int] = mapped_column(ForeignKey("courses.id", ondelete="CASCADE"))
    lab_id: Mapped[str] = mapped_column(String(64))
    exercise_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    passed: Mapped[bool] = mapped_column(Boolean)
    points: Mapped[float] = mapped_column(Float, default=0)  # what this try earned
    feedback: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(String(500))
    hints_used: Mapped[int] = mapped_column(Integer, default=0)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    # Judged (passed or failed on the work) rather than not run (timeout, no sandbox, ...).
    counted: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    # Within the exercise's graded tries (`attempts:` in lab.yaml): it could earn points.
    graded: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    deduction: Mapped[float] = mapped_column(Float, default=0, server_default="0")

    user: Mapped[User] = relationship()


class LoginFailure(db.Model):
    """One failed sign-in, kept for the rate limit's window (see auth.py). `device` is the
    nonce of the device token the browser showed for this username, None if it had none."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key", "username", "address", "at"),
                      Index("ix_login_failures_address", "address", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class JoinFailure(db.Model):
    """One wrong join code (sign-up or joining a course), kept for the throttle's window
    (see auth.py): per client address, and per user when signed in."""

    __tablename__ = "join_failures"
    __table_args__ = (Index("ix_join_failures_address", "address", "at"),
                      Index("ix_join_failures_user", "user_id", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
