"""The commands the README and docs/ tell a user to type still exist, with the options they name.

Every `wm-vla ...` line is parsed by the real `wm-vla` argument parser (nothing runs). Prose names commands without
their required arguments (`wm-vla train world-model`), so every argument is made optional for the check; an unknown
command, an unknown option or a value of the wrong type fails. `python benchmarks/X.py --opt`, `make TARGET`,
`ros2 launch wm_vla X` and relative links must point at files, options and targets that exist.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from wm_vla.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# abbreviations (`...`, `(same --dataset ...)`): such lines are not parsed
ABBREVIATED = re.compile(r"\.\.\.|…|[<>{}()]")
# placeholders a user fills in (`--episodes N`, `bag eval BAG --out DIR`) get a value of their type, alternatives
# (`up|demo`) their first; [optional] parts stay
PLACEHOLDERS = (
    (re.compile(r"([\w.,-]+)(?:\|[\w.,-]+)+"), r"\1"),
    (re.compile(r"\bN\b"), "1"),
    (re.compile(r"\b(DIR|BAG|CKPT|FILE|P|S|POLICY|DIR_OR_REPO_ID)\b"), "x"),
    (re.compile(r"[\[\]]"), ""),
)
# argparse errors that mean the command or an option does not exist, or a value has the wrong type
DRIFT = ("invalid", "unrecognized arguments", "not allowed with")


@dataclass(frozen=True)
class Mention:
    doc: Path
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}: {self.text}"


def _code(doc: Path) -> list[Mention]:
    """Inline code spans and fenced-block lines (continuations joined) of `doc`."""
    found: list[Mention] = []
    lines = doc.read_text().splitlines()
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            text, start = line.strip().removeprefix("$ "), i
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1] + " " + lines[i].strip()
            found.append(Mention(doc, start + 1, text))
        else:
            found += [Mention(doc, i + 1, m.group(1)) for m in re.finditer(r"`([^`]+)`", line)]
        i += 1
    return found


def _commands(prefix: str) -> list[Mention]:
    """Code mentions starting with `prefix`, cut at a comment or a shell operator."""
    out = []
    for doc in DOCS:
        for m in _code(doc):
            if m.text.startswith(prefix):
                text = re.split(r"\s+(?:#|&&|\|\||\||;|>)\s*", m.text)[0].strip()
                out.append(Mention(m.doc, m.line, text))
    return out


def _lenient(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`parser` with every argument optional, so that a mention without its required arguments still has its
    options checked (argparse reports missing required arguments before unknown ones)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                _lenient(sub)
        elif action.option_strings:
            action.required = False
        elif action.nargs is None:
            action.nargs = "?"
    return parser


def _parse_error(argv: list[str]) -> str | None:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            _lenient(build_parser()).parse_args(argv)
    except SystemExit as exit_:
        if exit_.code:
            return err.getvalue().strip().splitlines()[-1] if err.getvalue() else str(exit_.code)
    return None


def test_the_docs_name_commands_at_all() -> None:
    """Guards the extraction: if it found nothing, the checks below would pass on nothing."""
    assert len(_commands("wm-vla ")) > 100
    assert len(_commands("python benchmarks/")) > 10


def test_every_documented_wm_vla_command_parses() -> None:
    drift = []
    for m in _commands("wm-vla "):
        if ABBREVIATED.search(m.text):
            continue
        text = m.text
        for pattern, value in PLACEHOLDERS:
            text = pattern.sub(value, text)
        try:
            argv = shlex.split(text)[1:]
        except ValueError:
            continue
        error = _parse_error(argv)
        if error and any(word in error for word in DRIFT):
            drift.append(f"{m}\n    {error}")
    assert not drift, "documented commands the CLI no longer accepts:\n" + "\n".join(drift)


def test_the_drift_check_catches_an_unknown_command_and_option() -> None:
    assert "invalid choice" in (_parse_error(["collect", "--video"]) or "")
    assert "unrecognized arguments" in (_parse_error(["sim", "collect", "--out", "x", "--no-such-option"]) or "")
    assert _parse_error(["sim", "collect", "--world", "arm", "--episodes", "2", "--out", "x", "--video"]) is None


def test_every_documented_script_exists_with_its_options() -> None:
    missing = []
    for m in _commands("python benchmarks/") + _commands("python scripts/"):
        script = ROOT / m.text.split()[1]
        if not script.is_file():
            missing.append(f"{m}\n    no such file")
            continue
        source = script.read_text()
        options = re.findall(r"(?<!\S)(--[a-z][a-z0-9-]*)", m.text)
        missing += [f"{m}\n    {opt} is not an option of {script.name}" for opt in options
                    if f'"{opt}"' not in source and f"'{opt}'" not in source]
    assert not missing, "\n".join(missing)


def test_every_documented_make_target_and_launch_file_exists() -> None:
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.M))
    missing = [f"{m}: no target" for m in _commands("make ") if m.text.split()[1] not in targets]
    for m in _commands("ros2 launch wm_vla "):
        if not (ROOT / "launch" / m.text.split()[3]).is_file():
            missing.append(f"{m}: no such launch file")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_relative_links_point_at_files(doc: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (doc.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{doc.name}: links to missing files: {broken}"
