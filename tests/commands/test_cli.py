"""The ``prorl`` command line registers every subcommand, and a subcommand that fails to import is
an error, never silently missing from the CLI."""

from __future__ import annotations

import argparse

import pytest

from prorl import cli


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


def test_every_subcommand_is_registered():
    assert _subcommands(cli.build_parser()) == [name for name, _, _ in cli.COMMANDS]


def test_a_subcommand_that_does_not_import_is_an_error(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", cli.COMMANDS + [("ghost", "prorl.commands.ghost", "not there")])
    with pytest.raises(ModuleNotFoundError, match="prorl.commands.ghost"):
        cli.build_parser()


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name, _, _ in cli.COMMANDS)
