"""Checks of the OpenAI chat request fields the gateway reads or forwards (pure).

Each problem is one ``Invalid`` in OpenAI's words: the message, the ``param`` path
(``messages[0].role``) and the code (``invalid_type``, ``invalid_value``, ``missing_required_parameter``,
``integer_below_min_value`` ...), answered as ``400 invalid_request_error``. Fields the gateway neither
reads nor forwards specially pass through untouched for the provider to judge.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
PART_TYPES = {
    "system": ("text",),
    "developer": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
    "tool": ("text",),
    "function": ("text",),
}
MAX_N = 128


@dataclass(frozen=True, slots=True)
class Invalid:
    message: str
    param: str | None
    code: str


_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a decimal"),
    (str, "a string"),
    (list, "an array"),
    (dict, "an object"),
)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return next((name for kind, name in _TYPE_NAMES if isinstance(value, kind)), "an object")


def _wrong_type(param: str, expected: str, value: Any) -> Invalid:
    got = _type_name(value)
    return Invalid(
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.", param, "invalid_type"
    )


def _supported(param: str, value: Any, allowed: tuple[str, ...]) -> Invalid:
    names = ", ".join(f"'{a}'" for a in allowed)
    return Invalid(
        f"Invalid value: {json.dumps(value)}. Supported values are: {names}.", param, "invalid_value"
    )


def _out_of_range(name: str, kind: str, value: float, low: float, high: float | None) -> Invalid | None:
    """OpenAI's ``integer_below_min_value`` / ``decimal_above_max_value`` ... answer, or None in range."""
    if value < low:
        side, sign, bound = "below", ">=", low
    elif high is not None and value > high:
        side, sign, bound = "above", "<=", high
    else:
        return None
    which = "minimum" if side == "below" else "maximum"
    return Invalid(
        f"Invalid '{name}': {kind} {side} {which} value. "
        f"Expected a value {sign} {bound:g}, but got {value} instead.",
        name,
        f"{kind}_{side}_{which[:3]}_value",
    )


def _integer(body: Mapping[str, Any], name: str, low: int, high: int | None = None) -> Invalid | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return _wrong_type(name, "an integer", value)
    return _out_of_range(name, "integer", value, low, high)


def _decimal(body: Mapping[str, Any], name: str, low: float, high: float) -> Invalid | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _wrong_type(name, "a decimal", value)
    return _out_of_range(name, "decimal", value, low, high)


def _boolean(body: Mapping[str, Any], name: str, param: str | None = None) -> Invalid | None:
    value = body.get(name)
    if value is None or isinstance(value, bool):
        return None
    return _wrong_type(param or name, "a boolean", value)


def _missing(param: str) -> Invalid:
    return Invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _part(part: Any, role: str, param: str) -> Invalid | None:  # noqa: PLR0911 - one return per rule
    if not isinstance(part, Mapping):
        return _wrong_type(param, "an object", part)
    kind = part.get("type")
    if kind is None:
        return Invalid(
            f"Missing required parameter: '{param}.type'.", f"{param}.type", "missing_required_parameter"
        )
    if kind not in PART_TYPES[role]:
        return _supported(f"{param}.type", kind, PART_TYPES[role])
    if kind in ("text", "refusal"):
        value = part.get(kind)
        if value is None:
            return Invalid(
                f"Missing required parameter: '{param}.{kind}'.",
                f"{param}.{kind}",
                "missing_required_parameter",
            )
        if not isinstance(value, str):
            return _wrong_type(f"{param}.{kind}", "a string", value)
    elif kind == "image_url":
        image = part.get("image_url")
        if not isinstance(image, Mapping) or not isinstance(image.get("url"), str):
            return Invalid(
                f"Missing required parameter: '{param}.image_url.url'.",
                f"{param}.image_url.url",
                "missing_required_parameter",
            )
    return None


def _message(message: Any, param: str) -> Invalid | None:  # noqa: PLR0911 - one return per rule
    if not isinstance(message, Mapping):
        return _wrong_type(param, "an object", message)
    role = message.get("role")
    if role is None:
        return Invalid(
            f"Missing required parameter: '{param}.role'.", f"{param}.role", "missing_required_parameter"
        )
    if role not in ROLES:
        return _supported(f"{param}.role", role, ROLES)
    content = message.get("content")
    if content is None:
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return None
        if role == "assistant" and "content" in message:
            return None
        return Invalid(
            f"Missing required parameter: '{param}.content'.",
            f"{param}.content",
            "missing_required_parameter",
        )
    if isinstance(content, list):
        for i, part in enumerate(content):
            problem = _part(part, str(role), f"{param}.content[{i}]")
            if problem is not None:
                return problem
    elif not isinstance(content, str):
        return _wrong_type(f"{param}.content", "a string or an array of content parts", content)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        return Invalid(
            f"Missing required parameter: '{param}.tool_call_id'.",
            f"{param}.tool_call_id",
            "missing_required_parameter",
        )
    return None


def validate_request(body: Mapping[str, Any]) -> Invalid | None:
    """The first problem with the fields the gateway reads or forwards, or None."""
    checks = (
        _integer(body, "max_tokens", 1),
        _integer(body, "max_completion_tokens", 1),
        _integer(body, "n", 1, MAX_N),
        _decimal(body, "temperature", 0.0, 2.0),
        _decimal(body, "top_p", 0.0, 1.0),
        _boolean(body, "stream"),
    )
    for problem in checks:
        if problem is not None:
            return problem
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, Mapping):
            return _wrong_type("stream_options", "an object", options)
        problem = _boolean(options, "include_usage", "stream_options.include_usage")
        if problem is not None:
            return problem
    for i, message in enumerate(body["messages"]):
        problem = _message(message, f"messages[{i}]")
        if problem is not None:
            return problem
    return None
