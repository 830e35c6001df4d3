"""OpenAI-compatible chat completions over aiohttp, with bounded retries on 429/5xx/timeouts.

Retries are hand-written with the gateway's own timing (``stoa_gateway.backoff``) rather than tenacity:
the policy is ten lines, it must honour ``Retry-After`` and give every attempt its own ``traceparent``
span, and it keeps the dependency list short.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from opentelemetry.trace import Span

from stoa_agents.backoff import is_retryable_status
from stoa_agents.turn_trace import chat_attempt, end_chat_attempt, traceparent_of
from stoa_gateway.backoff import parse_retry_after, retry_delay
from stoa_telemetry.gen_ai_metrics import GenAIClientMetrics

log = logging.getLogger("stoa.agents.model")
TARGET_HEADER = "X-Stoa-Target"  # the gateway target that answered


class ModelError(RuntimeError):
    """The model could not answer after all retries; ``str()`` is the provider's error, for the reason."""


@dataclass(frozen=True)
class Completion:
    content: str
    tokens_in: int
    tokens_out: int
    model: str  # the model that answered (the response's ``model``)
    duration_ms: int
    attempts: int
    # What the endpoint says the call cost (``usage.cost``, USD: the Stoa gateway, OpenRouter); None: not
    # reported. ``target``: the gateway target that answered (``X-Stoa-Target``), None without a gateway.
    cost_usd: float | None = None
    target: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    base_url: str
    model: str
    api_key: str | None = None
    max_tokens: int = 90
    temperature: float = 0.7
    timeout_seconds: float = 60.0
    retries: int = 3
    backoff_seconds: float = 0.5
    backoff_max_seconds: float = 8.0
    fallback_models: tuple[str, ...] = ()
    # How long an endpoint that refuses connections (the gateway still starting or restarting) is waited
    # for before it counts as a failed attempt: a dependency that is not up yet must not fail a debate.
    unreachable_grace_seconds: float = 120.0


def _error_text(status: int, body: str) -> str:
    text = " ".join(body.split())[:300]
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"


def reported_cost(usage: Any) -> float | None:
    """``usage.cost`` when it is a finite number >= 0 (USD), else None: a wrong number is never stored."""
    cost = usage.get("cost") if isinstance(usage, dict) else None
    if isinstance(cost, bool) or not isinstance(cost, int | float):
        return None
    value = float(cost)
    return value if math.isfinite(value) and value >= 0 else None


def parse_completion(
    data: Any, fallback_model: str, target: str | None, duration_ms: int, attempts: int
) -> Completion:
    try:
        choice = data["choices"][0]
        content = choice["message"]["content"] or ""
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"response without choices[0].message.content: {str(data)[:200]}") from exc
    usage = data.get("usage") or {}
    return Completion(
        content=str(content).strip(),
        tokens_in=int(usage.get("prompt_tokens") or 0),
        tokens_out=int(usage.get("completion_tokens") or 0),
        model=str(data.get("model") or fallback_model),
        duration_ms=duration_ms,
        attempts=attempts,
        cost_usd=reported_cost(usage),
        target=target or None,
    )


class ModelClient:
    def __init__(self, config: ModelConfig, genai: GenAIClientMetrics | None = None) -> None:
        self.config = config
        self.genai = genai
        self._session: aiohttp.ClientSession | None = None

    def _headers(self, agent: str, conversation: str, priority: str, traceparent: str) -> dict[str, str]:
        headers = {
            "X-Stoa-Agent": agent,
            "X-Stoa-Conversation": conversation,
            "X-Stoa-Priority": priority,
            "traceparent": traceparent,
        }
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        return headers

    def _record(
        self,
        span: Span,
        *,
        model: str,
        started: float,
        answered: Completion | None,
        error_type: str,
        error: str,
    ) -> None:
        """End one attempt's span and record ``gen_ai.client.*`` for it."""
        end_chat_attempt(span, answered, error_type, error)
        if self.genai is not None:
            self.genai.record(
                request_model=model,
                response_model=answered.model if answered else "",
                seconds=time.monotonic() - started,
                input_tokens=answered.tokens_in if answered else None,
                output_tokens=answered.tokens_out if answered else None,
                error_type="" if answered else error_type,
            )

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        agent: str,
        conversation: str,
        traceparent: str | None,
        priority: str = "normal",
    ) -> Completion:
        """One chat completion: the model with bounded retries, then each fallback model (with the gateway,
        fallback ModelPolicies) the same way; raises ``ModelError`` with every provider error."""
        errors: list[str] = []
        models = [self.config.model, *self.config.fallback_models]
        for index, model in enumerate(models):
            try:
                return await self._complete_one(
                    model,
                    messages,
                    agent=agent,
                    conversation=conversation,
                    traceparent=traceparent,
                    priority=priority,
                )
            except ModelError as exc:
                errors.append(str(exc))
                if index + 1 < len(models):
                    log.warning(
                        "Model failed, trying fallback agent=%s fallback=%s error=%r",
                        agent,
                        models[index + 1],
                        str(exc),
                    )
        raise ModelError("; then ".join(errors))

    async def _complete_one(  # noqa: PLR0915 - one attempt loop; split, its state would spread over helpers
        self,
        model_name: str,
        messages: list[dict[str, str]],
        *,
        agent: str,
        conversation: str,
        traceparent: str | None,
        priority: str = "normal",
    ) -> Completion:
        cfg = self.config
        body = {
            "model": model_name,
            "messages": messages,
            "max_tokens": cfg.max_tokens,
            "temperature": cfg.temperature,
            "stream": False,
        }
        url = cfg.base_url.rstrip("/") + "/chat/completions"
        started = time.monotonic()
        last_error = "no attempt made"
        attempts = cfg.retries + 1
        session = await self.session()
        unreachable_since: float | None = None
        attempt = 0
        while attempt < attempts:
            span = chat_attempt(model_name, traceparent, attempt + 1)
            attempt_started = time.monotonic()
            answered: Completion | None = None
            error_type = "_OTHER"
            try:
                headers = self._headers(agent, conversation, str(priority), traceparent_of(span))
                retry_after: float | None = None
                try:
                    timeout = aiohttp.ClientTimeout(total=cfg.timeout_seconds)
                    async with session.post(url, json=body, headers=headers, timeout=timeout) as resp:
                        text = await resp.text()
                        if resp.status == 200:
                            completion = parse_completion(
                                json.loads(text),
                                model_name,
                                resp.headers.get(TARGET_HEADER),
                                int((time.monotonic() - started) * 1000),
                                attempt + 1,
                            )
                            answered = completion
                            return completion
                        error_type = str(resp.status)
                        last_error = _error_text(resp.status, text)
                        if not is_retryable_status(resp.status):
                            raise ModelError(f"model {model_name} at {cfg.base_url}: {last_error}")
                        retry_after = parse_retry_after(resp.headers.get("Retry-After"), time.time())
                except TimeoutError:
                    error_type = "timeout"
                    last_error = f"timed out after {cfg.timeout_seconds:g}s"
                except aiohttp.ClientConnectionError as exc:
                    error_type = "connection_error"
                    # Refused, reset or closed without a response: nothing serves the endpoint (yet) — a
                    # gateway starting or restarting, a Service without ready endpoints. Provider errors
                    # arrive as HTTP statuses from the gateway and are retried a bounded number of times.
                    last_error = f"cannot connect: {type(exc).__name__}: {exc}"
                    now = time.monotonic()
                    unreachable_since = now if unreachable_since is None else unreachable_since
                    if now - unreachable_since < cfg.unreachable_grace_seconds:
                        log.warning(
                            "Model endpoint unreachable, waiting agent=%s conversation=%s url=%s error=%r",
                            agent,
                            conversation,
                            cfg.base_url,
                            last_error,
                        )
                        await asyncio.sleep(min(1.0, cfg.backoff_max_seconds))
                        continue
                except aiohttp.ClientError as exc:
                    error_type = type(exc).__name__
                    last_error = f"{type(exc).__name__}: {exc}"
                except ValueError as exc:
                    error_type = "invalid_response"
                    last_error = f"invalid response: {exc}"
                attempt += 1
                if attempt < attempts:
                    cap = cfg.backoff_max_seconds
                    delay = retry_delay(
                        attempt, retry_after, base=cfg.backoff_seconds, cap=cap, retry_after_cap=cap
                    )
                    log.warning(
                        "Model call failed agent=%s conversation=%s attempt=%d error=%r retry_in=%.2fs",
                        agent,
                        conversation,
                        attempt,
                        last_error,
                        delay,
                    )
                    await asyncio.sleep(delay)
            finally:
                self._record(
                    span,
                    model=model_name,
                    started=attempt_started,
                    answered=answered,
                    error_type=error_type,
                    error=last_error,
                )
        raise ModelError(
            f"model {model_name} at {cfg.base_url} failed after {attempts} attempts: {last_error}"
        )
