"""Which files ``docker build`` sends as the build context: a ``.dockerignore`` evaluator.

The image cache key hashes exactly the files the Docker client would send, so a change to an ignored file
(``tests/``, ``.venv``) does not rebuild an image and a change to a sent one always does. Semantics follow
the Docker client (moby/patternmatcher): patterns are evaluated in order and the last match wins, ``!``
re-includes, ``**`` matches any number of directories, ``*`` and ``?`` never cross ``/``, and a pattern that
matches a directory matches everything below it.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rule:
    pattern: str
    exclude: bool  # False for a `!` exception
    regex: re.Pattern[str]


def _translate(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):  # `**/` : zero or more directories
                out += "(?:.*/)?"
                i += 1
            else:
                out += ".*"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise ValueError(f"unterminated character class in .dockerignore pattern {pattern!r}")
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            i = end
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out + r"\Z")


def parse(text: str) -> list[Rule]:
    """The rules of a ``.dockerignore`` file (comments and blank lines dropped, paths cleaned)."""
    rules: list[Rule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = line if exclude else line[1:].strip()
        pattern = posixpath.normpath(pattern).lstrip("/")
        if pattern in ("", "."):
            continue
        rules.append(Rule(pattern, exclude, _translate(pattern)))
    return rules


def excluded(path: str, rules: list[Rule]) -> bool:
    """Whether ``path`` (relative, ``/``-separated) stays out of the build context."""
    parents = [path]
    while "/" in parents[-1]:
        parents.append(parents[-1].rsplit("/", 1)[0])
    result = False
    for rule in rules:
        if any(rule.regex.match(candidate) for candidate in parents):
            result = rule.exclude
    return result


def _may_contain_exception(directory: str, rules: list[Rule]) -> bool:
    """Whether a `!` rule could re-include something below an excluded ``directory``."""
    for rule in rules:
        if rule.exclude:
            continue
        literal = re.split(r"[*?\[\\]", rule.pattern, maxsplit=1)[0]
        if literal.startswith(directory + "/") or directory.startswith(literal.rstrip("/")):
            return True
    return False


def context_files(root: Path, rules: list[Rule]) -> list[str]:
    """The files (relative, sorted) ``docker build root`` sends, given the rules of its .dockerignore."""
    found: list[str] = []
    for current, dirs, files in os.walk(root):
        rel = Path(current).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        dirs[:] = sorted(
            d for d in dirs if not excluded(prefix + d, rules) or _may_contain_exception(prefix + d, rules)
        )
        found.extend(prefix + f for f in files if not excluded(prefix + f, rules))
    return sorted(found)
