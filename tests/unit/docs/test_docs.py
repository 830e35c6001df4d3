"""The docs say only what exists: every ``make`` target and ``stoa`` command quoted in README.md and docs/
(code blocks and inline code) exists, every chart value name quoted exists in values.yaml, the printer
columns the README lists are the CRDs', and the table of invalid inputs is the e2e test's."""

from __future__ import annotations

import contextlib
import io
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from stoa_cli.main import DELEGATED, build_parser, main
from stoa_operator.models.kinds import KINDS
from tests.e2e.operator.invalid_inputs import markdown_table

REPO = Path(__file__).resolve().parents[3]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
VALUES = yaml.safe_load((REPO / "charts" / "stoa" / "values.yaml").read_text())
# Delegated commands with subcommands of their own (the others take arguments, not subcommands).
NESTED = {"operator", "observability", "conversations"}
WORD = r"[a-z][a-z0-9-]*"


def _code(text: str) -> list[str]:
    """The code of a Markdown text: fenced blocks and inline spans."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return blocks + re.findall(r"``?([^`\n]+)``?", prose)


@cache
def _quoted() -> list[tuple[str, str]]:
    """(document, code) pairs."""
    return [(path.relative_to(REPO).as_posix(), code) for path in DOCS for code in _code(path.read_text())]


def _make_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9_-]+):", (REPO / "Makefile").read_text(), re.MULTILINE))


def _commands(code: str, program: str) -> list[list[str]]:
    """Each ``program word word ...`` in a piece of code: the words up to the first that is not a bare
    lower-case word (an option, a path, a placeholder)."""
    found = []
    for match in re.finditer(rf"(?<![\w/.$-])(?<!the ){program}((?: {WORD}(?=[\s`|;:,)]|$))+)", code):
        found.append(match.group(1).split())
    return found


def test_every_quoted_make_target_exists() -> None:
    targets = _make_targets()
    quoted = {(doc, words[0]) for doc, code in _quoted() for words in _commands(code, "make")}
    assert ("README.md", "demo-kind") in quoted
    missing = sorted(f"{doc}: make {target}" for doc, target in quoted if target not in targets)
    assert missing == []


def _usage(words: list[str]) -> str:
    """What ``stoa <words> --help`` prints (in process: argparse exits after printing)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*words, "--help"])
    return out.getvalue()


@cache
def _valid(words: tuple[str, ...]) -> bool:
    """Whether ``stoa <words>`` names a command: the first word a command, each further word a subcommand
    its parent's help lists."""
    commands = set(build_parser()._subparsers._group_actions[0].choices or ())  # type: ignore[union-attr]
    if words[0] not in commands:
        return False
    if len(words) == 1 or (words[0] in DELEGATED and words[0] not in NESTED):
        return True
    usage = _usage(list(words[:-1]))
    return re.search(rf"(?<![\w-]){re.escape(words[-1])}(?![\w-])", usage) is not None and _valid(words[:-1])


def test_every_quoted_stoa_command_exists() -> None:
    commands = {tuple(words) for _, code in _quoted() for words in _commands(code, "stoa")}
    assert ("dev", "demo") in commands
    assert ("operator", "drain") in commands
    wrong = []
    for words in sorted(commands):
        for depth in range(1, len(words) + 1):
            if not _valid(words[:depth]):
                if depth == 1 or words[0] in NESTED or words[0] == "dev":
                    wrong.append(" ".join(words[:depth]))
                break
    assert wrong == [], f"quoted but no such command: {wrong}"


def test_the_check_catches_a_command_that_does_not_exist() -> None:
    assert _valid(("operator", "crds", "generate"))
    assert not _valid(("operator", "purge"))
    assert not _valid(("dev", "demo-kind"))
    assert not _valid(("crds",))


def _value_paths(code: str) -> list[str]:
    """Chart value names in a piece of code: ``--set a.b=...`` and bare ``<top key>.x.y`` names."""
    tops = "|".join(sorted(map(re.escape, VALUES), key=len, reverse=True))
    names = re.findall(r"--set[= ]'?([A-Za-z][\w.\[\]*]*)=", code)
    names += re.findall(rf"(?<![\w./$-])((?:{tops})(?:\.[A-Za-z*][\w*]*|\[\d+\])+)(?![\w(])", code)
    return sorted(set(names))


def _exists(path: str, node: Any = VALUES) -> bool:
    parts = [p for p in re.split(r"\.|\[(\d+)\]", path) if p]
    for part in parts:
        if isinstance(node, list):
            if not part.isdigit():
                return False
            if not node:  # an empty list by default (e.g. imagePullSecrets): its items are the user's
                return True
            node = node[0]
        elif isinstance(node, dict):
            if part == "*":
                return bool(node)
            if part not in node:
                return False
            node = node[part]
        else:
            return False
    return True


def test_every_quoted_chart_value_exists() -> None:
    names = {(doc, name) for doc, code in _quoted() for name in _value_paths(code)}
    assert ("docs/install.md", "uninstall.drain") in names
    missing = sorted(f"{doc}: {name}" for doc, name in names if not _exists(name))
    assert missing == []


def test_the_value_check_catches_a_name_that_does_not_exist() -> None:
    assert _exists("bundled.model.image.tag")
    assert _exists("imagePullSecrets[0].name")
    assert not _exists("bundled.model.tag")
    assert _value_paths("helm install --set image.tagg=1 x") == ["image.tagg"]


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
def test_the_readme_lists_each_kinds_printer_columns(kind: Any) -> None:
    """README's "kubectl get stoa" paragraph names each kind's columns (the default ones, in order)."""
    text = " ".join((REPO / "README.md").read_text().split())
    plural = {"ModelPolicy": "ModelPolicies", "Agent": "Agents", "Conversation": "Conversations"}[kind.kind]
    found = re.search(rf"{plural} \((?:columns )?([A-Z][\w, ]+?)[):]", text)
    assert found, f"README does not list the columns of {plural}"
    columns = [c.strip() for c in found.group(1).split(",")]
    assert columns == [
        c["name"] for c in kind.printer_columns if not c.get("priority") and c["name"] != "Age"
    ]


def test_operator_md_has_the_invalid_inputs_table_of_the_e2e_test() -> None:
    assert markdown_table() in (REPO / "docs" / "operator.md").read_text()


def test_install_md_has_the_tenant_commands_the_e2e_test_runs() -> None:
    text = (REPO / "docs" / "install.md").read_text()
    assert "-- stoa-tenant-sql\n" in text
    assert "# stoa-tenant-rabbitmq\n" in text
