"""Shared pieces of the `cxe` commands: argument types, the market a command runs, notes
on logs. Nothing here prints except `note_torn_tail` (to stderr)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engine.config import default_market, load_market

if TYPE_CHECKING:
    from engine.config import MarketConfig


def whole_number(text: str) -> int:
    """`text` as an int, or the argparse error that says it is not one (digits 0-9 only:
    Python's int() takes other scripts' digits, '３' among them)."""
    try:
        if not text.isascii():
            raise ValueError(text)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: a whole number of at least 0."""
    value = whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


QUEUE_LIMIT = 2**31 - 1  # ZeroMQ's high-water marks are C ints


def queue_length(text: str) -> int:
    """argparse type: a ZeroMQ high-water mark, a whole number from 1 to 2**31 - 1."""
    value = positive_int(text)
    if value > QUEUE_LIMIT:
        raise argparse.ArgumentTypeError(f"must be at most {QUEUE_LIMIT:,}, got {value:,}")
    return value


def add_key_options(parser: argparse.ArgumentParser, default: object = None) -> None:
    """--key and --server-key: an operator's CURVE key pair and the engine's public key, for
    an engine with a [security] config (engine.gateway.security.client_keys reads them)."""
    parser.add_argument(
        "--key",
        default=default,
        metavar="FILE",
        help="your operator NAME.key_secret, for an engine with CURVE (default: none)",
    )
    parser.add_argument(
        "--server-key",
        default=default,
        metavar="FILE",
        help="the engine's public key file, NAME.key (with --key)",
    )


def positive_seconds(text: str) -> float:
    """argparse type: a number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def member_id(text: str) -> int:
    """argparse type: a member id, a whole number from 0 below 2**31."""
    value = whole_number(text)
    if not 0 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"a member id is from 0 below 2**31, not {value}")
    return value


def trading_date(text: str) -> str:
    """argparse type: a calendar date written YYYY-MM-DD."""
    from engine.types import is_trading_date

    if not is_trading_date(text):
        raise argparse.ArgumentTypeError(f"not a calendar date YYYY-MM-DD: {text!r}")
    return text


def market_of(path: str | None) -> MarketConfig:
    """The market file at `path`, or the embedded default market."""
    return default_market() if path is None else load_market(path)


def note_torn_tail(path: Path) -> None:
    """Say on stderr when a log ends in a torn record (read past it, as a crash leaves it)."""
    from engine.framing import torn_tail

    end, torn = torn_tail(path)
    if torn:
        print(
            f"note: {path} ends in an incomplete record ({torn:,} bytes after byte {end:,}): "
            "a write cut short by a crash; everything before it was read",
            file=sys.stderr,
        )
