"""`nslab lab validate|test`: prove a lab before a learner sees it (docs/authoring.md)."""

from __future__ import annotations

import sys

from nslab.labkit.catalog import default_labs_dir, find_labs
from nslab.labkit.loader import validate
from nslab.labkit.replay import replay_lab
from sandbox.client import Client

from .common import EXIT_ERROR, CommandError, add_socket


def cmd_lab_validate(args) -> int:
    try:
        labs = validate(find_labs(args.path))
    except FileNotFoundError as e:
        raise CommandError(str(e)) from None
    if not labs:
        raise CommandError(f"no labs (folders with a lab.yaml) in {args.path or 'labs/'}")
    bad = 0
    for lab in labs:
        for err in lab.errors:
            print(err)
        bad += bool(lab.errors)
        if not lab.errors:
            print(f"{lab.id}: ok ({len(lab.steps)} steps, {len(lab.exercises)} exercises, "
                  f"{lab.max_points} points)")
    if bad:
        print(f"{bad} of {len(labs)} labs have errors", file=sys.stderr)
    return EXIT_ERROR if bad else 0


def cmd_lab_test(args) -> int:
    base = default_labs_dir()
    try:
        paths = [p for name in args.labs for p in find_labs(name if "/" in name else base / name)] \
            if args.labs else find_labs(None)
    except FileNotFoundError as e:
        raise CommandError(str(e)) from None
    labs = validate(paths)
    broken = [lab for lab in labs if lab.errors]
    for lab in broken:
        for err in lab.errors:
            print(err, file=sys.stderr)
    if broken:
        raise CommandError("fix the errors above first (`nslab lab validate`)")
    daemon = Client(args.socket)
    daemon.info()  # a clear "cannot reach sandboxd" before any lab starts
    ok = True
    for lab in labs:
        ok &= replay_lab(daemon, lab, seed=args.seed, only=args.exercise or None,
                         keep=args.keep)
    print("all exercises behave" if ok else "some exercises misbehave (FAIL lines above)")
    return 0 if ok else EXIT_ERROR


# ---------------------------------------------------------------- parser

def add_lab_commands(sub) -> None:
    lb = sub.add_parser("lab", help="check labs before learners see them")
    lbs = lb.add_subparsers(dest="lab_command", required=True)
    lv = lbs.add_parser("validate", help="report every error of a lab (or of all labs) as "
                        "file:line")
    lv.add_argument("path", nargs="?", help="a lab folder or a folder of labs (default: labs/)")
    lv.set_defaults(func=cmd_lab_validate)
    lt = lbs.add_parser("test", help="replay solutions and wrong answers on real sandboxes "
                        "(needs sandboxd)")
    lt.add_argument("labs", nargs="*", help="lab ids or folders (default: every lab)")
    lt.add_argument("--exercise", action="append", metavar="ID",
                    help="only this exercise (repeatable)")
    lt.add_argument("--seed", type=int, help="seed for the drawn per-learner values")
    lt.add_argument("--keep", action="store_true", help="keep the sandboxes for a look")
    add_socket(lt)
    lt.set_defaults(func=cmd_lab_test)


COMMANDS = {"lab": add_lab_commands}
