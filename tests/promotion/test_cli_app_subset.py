"""``promote`` builds only the commands its arguments name (start-up): it must parse the same."""

from __future__ import annotations

import pytest
from typer.main import get_command_name
from typer.testing import CliRunner

from promotion import cli


def names(app: object) -> set[str]:
    assert isinstance(app, cli.PromoteTyper)
    return {
        c.name or get_command_name(c.callback.__name__) for c in app.registered_commands if c.callback
    } | {g.name for g in app.registered_groups if g.name}


ALL = names(cli.app)


def test_a_command_gets_a_copy_with_only_what_the_arguments_name() -> None:
    subset = cli._app_for(["-c", "p.yaml", "publish", "app.tar.gz", "--service", "api"])
    assert subset is not cli.app and names(subset) == {"publish"}
    # A value that happens to be a command name brings that command along, harmlessly.
    assert names(cli._app_for(["publish", "status", "--service", "api"])) == {"publish", "status"}
    assert names(cli._app_for(["ledger", "verify", "-s", "api"])) == {"ledger", "verify"}
    assert len(ALL) > 15 and cli.app.registered_commands  # the app itself is left whole


@pytest.mark.parametrize(
    "args",
    [[], ["--help"], ["--help", "publish"], ["-c", "p.yaml"], ["nosuch"], ["publsh", "x"]],
    ids=["nothing", "help", "help-first", "no-command", "unknown", "typo"],
)
def test_without_a_known_command_or_with_root_help_it_is_the_whole_app(args: list[str]) -> None:
    assert cli._app_for(args) is cli.app


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_command_parses_and_helps_the_same_from_the_copy(name: str) -> None:
    runner = CliRunner()
    for args in ([name, "--help"], [name, "--no-such-option"], ["-c", "p.yaml", name, "--help"]):
        whole = runner.invoke(cli.app, args, prog_name="promote")
        subset = runner.invoke(cli._app_for(args), args, prog_name="promote")
        assert (subset.exit_code, subset.output) == (whole.exit_code, whole.output), args
    assert whole.exit_code == 0 and "Usage: promote" in whole.output


def test_an_unknown_command_still_lists_the_commands_there_are() -> None:
    r = CliRunner().invoke(cli._app_for(["publsh"]), ["publsh"], prog_name="promote")
    assert r.exit_code == 2 and "No such command 'publsh'" in r.output
