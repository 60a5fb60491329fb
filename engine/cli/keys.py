"""`cxe keys NAME --dir DIR`: a CURVE key pair for the engine or one of its peers.

Writes DIR/NAME.key (the public key, to list in the market config's [security] section or
give to clients) and DIR/NAME.key_secret (both keys, mode 0600, kept by its owner); never
overwrites an existing key file.
"""

from __future__ import annotations

import argparse


def cmd_keys(args: argparse.Namespace) -> int:
    from engine.gateway.security import create_key_pair, read_key

    public, secret = create_key_pair(args.dir, args.name)
    key = read_key(str(public), str(public)).public.decode()
    print(f"public key {public} ({key})")
    print(f"secret key {secret} (mode 0600: keep it on the machine that uses it)")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser(
        "keys",
        help="make a CURVE key pair (the engine's, a gateway's, an operator's, a reader's)",
        description="Write NAME.key (public) and NAME.key_secret (secret, mode 0600) into DIR, "
        "refusing to overwrite. List public keys in the market config's [security] section "
        "(docs/SECURITY.md). Secret keys are ignored by git (.gitignore: *.key_secret).",
        epilog="example: cxe keys engine --dir keys",
    )
    keys.add_argument("name", help="the key pair's name, e.g. engine, mm, alice")
    keys.add_argument("--dir", default=".", metavar="DIR", help="where to write (default .)")
    keys.set_defaults(run=cmd_keys)
