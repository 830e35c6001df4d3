"""Content guardrails (pure): blocked keywords/patterns and PII masking.

Keywords match case-insensitively on word boundaries; patterns are Python regular expressions
(searched, case-sensitive unless they say ``(?i)``). PII kinds are masked in this order: e-mail,
card (Luhn-checked 13-19 digits), ID number (US SSN ``123-45-6789``, IBAN), phone (7-15 digits).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from stoa_gateway.policy import ContentRules, PiiKind

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_SSN = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}(?![\w])"
)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")

PII_TOKENS = {
    PiiKind.EMAIL: "[EMAIL]",
    PiiKind.CARD: "[CARD]",
    PiiKind.ID_NUMBER: "[ID]",
    PiiKind.PHONE: "[PHONE]",
}
_ORDER = (PiiKind.EMAIL, PiiKind.CARD, PiiKind.ID_NUMBER, PiiKind.PHONE)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _card(m: re.Match[str]) -> str:
    return PII_TOKENS[PiiKind.CARD] if luhn_ok(_digits(m.group())) else m.group()


def _phone(m: re.Match[str]) -> str:
    text = m.group()
    if _DATE.fullmatch(text) or not 7 <= len(_digits(text)) <= 15:
        return text
    return PII_TOKENS[PiiKind.PHONE]


def mask_pii(text: str, kinds: Sequence[PiiKind]) -> tuple[str, dict[PiiKind, int]]:
    """Mask ``kinds`` in ``text``; returns the new text and how many of each were masked."""
    counts: dict[PiiKind, int] = {}
    wanted = set(kinds)
    for kind in _ORDER:
        if kind not in wanted:
            continue
        before = text
        if kind is PiiKind.EMAIL:
            text, n = _EMAIL.subn(PII_TOKENS[kind], text)
        elif kind is PiiKind.CARD:
            text = _CARD.sub(_card, text)
            n = text.count(PII_TOKENS[kind]) - before.count(PII_TOKENS[kind])
        elif kind is PiiKind.ID_NUMBER:
            text, n1 = _SSN.subn(PII_TOKENS[kind], text)
            text, n2 = _IBAN.subn(PII_TOKENS[kind], text)
            n = n1 + n2
        else:
            text = _PHONE.sub(_phone, text)
            n = text.count(PII_TOKENS[kind]) - before.count(PII_TOKENS[kind])
        if n:
            counts[kind] = n
    return text, counts


@dataclass(frozen=True, slots=True)
class CompiledRules:
    keywords: tuple[tuple[str, re.Pattern[str]], ...]
    patterns: tuple[re.Pattern[str], ...]
    pii: tuple[PiiKind, ...]


def _keyword_regex(keyword: str) -> re.Pattern[str]:
    body = re.escape(keyword)
    left = r"\b" if keyword[:1].isalnum() or keyword[:1] == "_" else ""
    right = r"\b" if keyword[-1:].isalnum() or keyword[-1:] == "_" else ""
    return re.compile(f"{left}{body}{right}", re.IGNORECASE)


@lru_cache(maxsize=256)
def _compile(keywords: tuple[str, ...], patterns: tuple[str, ...], pii: tuple[PiiKind, ...]) -> CompiledRules:
    return CompiledRules(
        keywords=tuple((k, _keyword_regex(k)) for k in keywords if k),
        patterns=tuple(re.compile(p) for p in patterns),
        pii=pii,
    )


def compile_rules(rules: ContentRules) -> CompiledRules:
    """Compiled (and cached by content) form of ``rules``."""
    return _compile(tuple(rules.blocked_keywords), tuple(rules.blocked_patterns), tuple(rules.mask_pii))


def find_blocked(text: str, rules: CompiledRules) -> str | None:
    """A description of the first blocked keyword or pattern found in ``text``, or None."""
    for keyword, regex in rules.keywords:
        if regex.search(text):
            return f"keyword {keyword!r}"
    for pattern in rules.patterns:
        if pattern.search(text):
            return f"pattern {pattern.pattern!r}"
    return None


def map_message_texts(messages: Any, fn: Callable[[str], str]) -> Any:
    """A deep copy of ``messages`` with ``fn`` applied to every text fragment."""
    out = copy.deepcopy(messages)
    if not isinstance(out, list):
        return out
    for message in out:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            message["content"] = fn(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    part["text"] = fn(part["text"])
    return out


def mask_messages(messages: Any, kinds: Sequence[PiiKind]) -> tuple[Any, dict[PiiKind, int]]:
    totals: dict[PiiKind, int] = {}

    def one(text: str) -> str:
        masked, counts = mask_pii(text, kinds)
        for kind, n in counts.items():
            totals[kind] = totals.get(kind, 0) + n
        return masked

    return map_message_texts(messages, one), totals


_SAFE_CUT = re.compile(r"[^\w@.+()\-][A-Za-z]")


def stream_cut(buffer: str, hold: int = 64) -> int:
    """Where a streaming text buffer can be cut so that no PII straddles the cut; 0 for nowhere.

    Cuts just before a word starting with a letter that follows a separator, at least ``hold``
    characters before the end (longer than any masked item).
    """
    limit = len(buffer) - hold
    cut = 0
    for m in _SAFE_CUT.finditer(buffer, 0, max(0, limit)):
        cut = m.start() + 1
    return cut
