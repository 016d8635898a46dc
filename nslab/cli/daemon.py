"""`nslab sandboxd` and `nslab image ls|build`: the root-only commands, which run the engine
itself (through `sandbox.main`, the CLI's one way into it) rather than talk to a daemon."""

from __future__ import annotations

import argparse

from sandbox.main import build_image, list_images, run_daemon

from .common import add_socket, print_json, table


def cmd_sandboxd(args) -> int:
    return run_daemon(name=args.name, state_dir=args.state_dir, socket=args.socket,
                      subnet=args.subnet, storage_size=args.storage_size,
                      socket_group=args.socket_group, warm=args.warm, max_ptys=args.max_ptys,
                      listen=args.listen,
                      token_file=args.token_file, teardown=args.teardown)


def cmd_image_ls(args) -> int:
    images = list_images(args.state_dir)
    if args.json:
        print_json(images)
        return 0
    rows = [[i["name"], f"{i['size_bytes'] / (1 << 20):.1f} MiB", i["description"]] for i in images]
    table(rows, ["NAME", "SIZE", "DESCRIPTION"])
    return 0


def cmd_image_build(args) -> int:
    img = build_image(args.name, args.state_dir, suite=args.suite)
    print(f"built image {img['name']} at {img['rootfs']}")
    return 0


# ---------------------------------------------------------------- parser

def _pty_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 1024")
    return int(text)


def add_sandboxd_command(sub) -> None:
    d = sub.add_parser("sandboxd", help="run the sandbox daemon (root)")
    add_socket(d)
    d.add_argument("--state-dir", help="where sandboxes, images and the storage pool live "
                   "(default /var/lib/nslab)")
    d.add_argument("--name", default="default", help="daemon name; several daemons with "
                   "different names and state dirs can run on one host")
    d.add_argument("--subnet", default="10.213.0.0/16", help="private IPv4 range for sandboxes")
    d.add_argument("--storage-size", default="64g", help="size of the sparse btrfs pool file")
    d.add_argument("--socket-group", help="group allowed to use the socket (mode 0660)")
    d.add_argument("--max-ptys", type=_pty_count, metavar="N",
                   help="terminals (ptys) one sandbox may open at once, 1-1024 (default 32): "
                   "the kernel shares pty.max - pty.reserve among all sandboxes")
    d.add_argument("--warm", type=int, default=2, choices=range(0, 65), metavar="N",
                   help="sandboxes kept half-built ahead of demand (default 2; 0 to disable)")
    d.add_argument("--listen", metavar="HOST:PORT", help="also listen on TCP (needs --token-file)")
    d.add_argument("--token-file", help="file holding the bearer token for --listen")
    d.add_argument("--teardown", action="store_true", help="instead of serving: destroy every "
                   "sandbox and home of this daemon and remove its bridge, firewall and pool mount")
    d.set_defaults(func=cmd_sandboxd)


def add_image_commands(sub) -> None:
    im = sub.add_parser("image", help="sandbox images")
    ims = im.add_subparsers(dest="image_command", metavar="COMMAND")
    ims.required = True
    il = ims.add_parser("ls", help="list images")
    il.add_argument("--state-dir")
    il.add_argument("--json", action="store_true")
    il.set_defaults(func=cmd_image_ls)
    ib = ims.add_parser("build", help="build an image (debian)")
    ib.add_argument("name", choices=["debian"])
    ib.add_argument("--suite", default="bookworm")
    ib.add_argument("--state-dir")
    ib.set_defaults(func=cmd_image_build)


COMMANDS = {"sandboxd": add_sandboxd_command, "image": add_image_commands}
