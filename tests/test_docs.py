"""The shell examples in the README and docs/ cannot drift: every documented command line of our three
programs is parsed by the program's own argument parser (nothing runs: parsing stops it), so a renamed
flag, a removed subcommand or a wrong choice in the docs fails here."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from receipt_service import _cli as service_cli
from receipt_service import _client_cli as client_cli
from receipt_verifier import _cli as verifier_cli
from tests.conftest import ROOT

PROGRAMS: dict[str, Callable[[list[str]], int]] = {
    "receipt-service": service_cli.main,
    "receipt-verify": verifier_cli.main,
    "receipt-client": client_cli.main,
}
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")
_STOP = {">", ">>", "|", "&&", "&", "2>", ";"}


def _code_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, command) of the indented or fenced code blocks, continuations joined."""
    fenced = False
    pending, start = "", 0
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or line.startswith("    ")):
            continue
        part = line.strip()
        if pending:
            pending += " " + part
        else:
            pending, start = part, n
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        yield start, pending
        pending = ""


def documented() -> list[tuple[str, list[str]]]:
    """(where, [program, args...]) of every command line of ours in the docs."""
    out = []
    for path in DOCS:
        for n, line in _code_lines(path.read_text()):
            try:
                words = shlex.split(line.replace("[", " ").replace("]", " "), comments=True)
            except ValueError:
                continue  # not a shell line (JSON, a table)
            while words and _ENV.match(words[0]):
                words.pop(0)
            if words[:2] == ["./run", "demo"]:
                words = ["receipt-service", *words[1:]]
            if not words or words[0] not in PROGRAMS:
                continue
            cut = next((i for i, w in enumerate(words) if w in _STOP), len(words))
            out.append((f"{path.relative_to(ROOT)}:{n}", words[:cut]))
    return out


COMMANDS = documented()


class _Parsed(BaseException):
    """Raised once the program's parser accepted the command line."""


def test_the_docs_show_commands_of_every_program() -> None:
    assert {argv[0] for _, argv in COMMANDS} == set(PROGRAMS)
    assert len(COMMANDS) >= 30, len(COMMANDS)


def _parses(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int | None:
    """None when the program's parser accepts ``argv``, else the exit code it gives."""
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        real(self, *args, **kwargs)  # exits (status 2) on a flag or choice the program does not know
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    try:
        return PROGRAMS[argv[0]](argv[1:])
    except _Parsed:
        return None
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_a_documented_command_line_parses(where: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code = _parses(argv, monkeypatch)
    assert code is None, f"{where}: {' '.join(argv)} is refused by the program's parser (exit {code})"


@pytest.mark.parametrize(
    "argv",
    [
        ["receipt-service", "fabric", "up", "--consensus", "solo"],
        ["receipt-verify", "history", "h.json", "--no-such-flag"],
        ["receipt-client", "stamp"],
    ],
)
def test_a_command_line_that_drifted_is_caught(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert _parses(argv, monkeypatch) == 2
