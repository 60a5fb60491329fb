"""Every `cxe` command's --help, walked: each shows an example and the default of every option
that has one (issue 18: a newcomer reads --help before anything else)."""

from __future__ import annotations

import argparse

import pytest

from engine.cli import build_parser
from tests.cli.test_cli import cxe


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command and subcommand under `parser`, as (words after cxe, its parser)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(((*path, name), sub))
                found += commands(sub, (*path, name))
    return found


ALL = commands(build_parser())
TOP = sorted({path[0] for path, _ in ALL})


def leaves() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Commands a person runs (not those that only group subcommands, such as `cxe log`)."""
    return [
        (path, parser)
        for path, parser in ALL
        if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    ]


def test_the_walk_finds_every_command():
    assert {"demo", "serve", "admin", "watch", "clear", "capture", "replay", "keys"} <= set(TOP)
    assert ("admin", "status") in [path for path, _ in ALL]
    assert ("log", "dump") in [path for path, _ in ALL]


@pytest.mark.parametrize("path", [path for path, _ in leaves()], ids=" ".join)
def test_every_command_help_shows_an_example_and_its_defaults(path):
    parser = dict(ALL)[path]
    text = parser.format_help()
    assert f"example: cxe {' '.join(path)}" in text, f"cxe {' '.join(path)} --help has no example"
    for action in parser._actions:
        default = action.default
        if not action.option_strings or default in (None, False, [], "", argparse.SUPPRESS):
            continue
        if isinstance(action, argparse._HelpAction):
            continue
        shown = f"{default:g}" if isinstance(default, float) else default
        assert action.help and f"default {shown}" in action.help.replace("%%", "%"), (
            f"cxe {' '.join(path)} {action.option_strings[0]}: its help does not show its "
            f"default {default!r}: {action.help!r}"
        )


@pytest.mark.parametrize("command", TOP)
def test_help_runs_as_a_command(command):
    """The real console script prints the same help and exits 0."""
    result = cxe(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: cxe " + command in result.stdout
    assert "example: cxe " + command in result.stdout


def test_version_names_the_installed_package():
    result = cxe("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("cxe ") and result.stdout.split()[1][0].isdigit()
