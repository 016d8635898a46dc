"""`nslab kernel run SANDBOX_ID --code CODE`: run Python in the sandbox's notebook kernel
(started, or the running one reused, so its state carries over between runs) and print
its outputs as they come; exit 1 when the code raised (its traceback printed on stderr).
For lab authors trying a cell, and for tests."""

from __future__ import annotations

import asyncio
import sys

from nslab.kernels import connect, disconnect, execute, text_of
from sandbox.client import Client

from .common import EXIT_ERROR, CommandError, add_socket


def cmd_kernel_run(args) -> int:
    code = sys.stdin.read() if args.code == "-" else args.code
    if not code.strip():
        raise CommandError("--code is empty (give the code, or - to read it from stdin)")
    return asyncio.run(_run(Client(args.socket), args.sandbox, code, args.timeout))


async def _run(client: Client, sandbox_id: str, code: str, timeout: float | None) -> int:
    km, kc = await connect(client, sandbox_id)
    try:
        def show(kind: str, content: dict) -> None:
            text = text_of(kind, content)
            if text is None:
                return
            err = kind == "error" or (kind == "stream" and content.get("name") == "stderr")
            stream = sys.stderr if err else sys.stdout
            stream.write(text)
            stream.flush()

        try:
            outcome = await execute(kc, code, timeout=timeout, on_output=show)
        except TimeoutError:
            await km.interrupt_kernel()
            raise CommandError(f"the code did not finish within {timeout} s; it was "
                               "interrupted") from None
    finally:
        disconnect(km, kc)
    return 0 if outcome.ok else EXIT_ERROR


def add_kernel_commands(sub) -> None:
    k = sub.add_parser("kernel", help="the notebook kernel inside a sandbox")
    ks = k.add_subparsers(dest="kernel_command", metavar="COMMAND")
    ks.required = True
    kr = ks.add_parser("run", help="run Python in the sandbox's kernel, print its outputs")
    add_socket(kr)
    kr.add_argument("sandbox", metavar="SANDBOX_ID")
    kr.add_argument("--code", required=True, help="the code (- reads it from stdin)")
    kr.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                    help="interrupt the code after this long and exit 1 (default: none)")
    kr.set_defaults(func=cmd_kernel_run)


COMMANDS = {"kernel": add_kernel_commands}
