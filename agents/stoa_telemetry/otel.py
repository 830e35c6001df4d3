"""The OpenTelemetry SDK, configured only by the standard ``OTEL_*`` variables (the I/O shell).

* Export is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set
  (OTLP over HTTP/protobuf, batched), off otherwise, and off with ``OTEL_SDK_DISABLED=true`` or
  ``OTEL_TRACES_EXPORTER=none``; ``OTEL_TRACES_EXPORTER=console`` prints spans (debugging).
* Everything else is read by the SDK itself: ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
  ``OTEL_TRACES_SAMPLER[_ARG]``, ``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS|TIMEOUT|COMPRESSION|CERTIFICATE``,
  ``OTEL_BSP_*``.
* With export off, spans are still created (not sampled, never recorded) so the W3C ``traceparent`` the
  gateway and the agents pass on keeps its ids: a sampled caller's decision is still honoured.

``ids.fixed(...)`` lets the runtime give a turn span its derived ids (see ``stoa_telemetry.ids``).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

log = logging.getLogger("stoa.telemetry")

_FIXED: contextvars.ContextVar[tuple[int | None, int | None]] = contextvars.ContextVar(
    "stoa_fixed_ids", default=(None, None)
)
SUPPORTED_PROTOCOLS = ("http/protobuf",)


class _StoaIds(RandomIdGenerator):
    """Random ids, except the ones ``fixed_ids`` hands to the next span started in this context."""

    def generate_trace_id(self) -> int:
        trace_id, _ = _FIXED.get()
        return trace_id if trace_id is not None else super().generate_trace_id()

    def generate_span_id(self) -> int:
        _, span_id = _FIXED.get()
        return span_id if span_id is not None else super().generate_span_id()


@contextlib.contextmanager
def fixed_ids(trace_id: int | None = None, span_id: int | None = None) -> Iterator[None]:
    """Start exactly one span inside: it gets these ids (trace id only used for a root span)."""
    token = _FIXED.set((trace_id, span_id))
    try:
        yield
    finally:
        _FIXED.reset(token)


@dataclass(frozen=True)
class ExportChoice:
    """What the environment asks for (pure): ``exporter`` is otlp, console or None (off)."""

    exporter: str | None
    reason: str


def export_choice(environ: Mapping[str, str]) -> ExportChoice:  # noqa: PLR0911 (one verdict per case)
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ExportChoice(None, "OTEL_SDK_DISABLED=true")
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    if not names or names == ["none"]:
        return ExportChoice(None, "OTEL_TRACES_EXPORTER=none")
    if "console" in names:
        return ExportChoice("console", "OTEL_TRACES_EXPORTER=console")
    if "otlp" not in names:
        return ExportChoice(None, f"unsupported OTEL_TRACES_EXPORTER={','.join(names)} (use otlp)")
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return ExportChoice(None, "no OTEL_EXPORTER_OTLP_ENDPOINT")
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol not in SUPPORTED_PROTOCOLS:
        return ExportChoice(
            None,
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: use http/protobuf"
            " (an OpenTelemetry Collector or Jaeger listens for it on port 4318)",
        )
    return ExportChoice("otlp", f"OTLP/HTTP to {endpoint}")


def resource_for(service: str, environ: Mapping[str, str], extra: Mapping[str, str]) -> Resource:
    """``service.name`` (``OTEL_SERVICE_NAME`` wins) and Stoa's defaults; OTEL_RESOURCE_ATTRIBUTES win."""
    attributes: dict[str, str] = {SERVICE_NAME: service, **{k: v for k, v in extra.items() if v}}
    detected = Resource.create()
    for key, value in detected.attributes.items():
        if (
            key == SERVICE_NAME
            and str(value).startswith("unknown_service")
            and not environ.get("OTEL_SERVICE_NAME")
        ):
            continue
        attributes[key] = str(value)
    return Resource(attributes)


@dataclass
class Tracing:
    provider: TracerProvider
    choice: ExportChoice

    @property
    def exporting(self) -> bool:
        return self.choice.exporter is not None

    def tracer(self, name: str) -> trace.Tracer:
        return self.provider.get_tracer(name)

    def flush(self, timeout_millis: int = 5000) -> None:
        self.provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Export what is buffered (bounded), then stop; called on graceful exit."""
        with contextlib.suppress(Exception):
            self.provider.force_flush(5000)
        self.provider.shutdown()


class _Installed:
    """The process's one tracer provider (OpenTelemetry allows setting the global provider once)."""

    tracing: Tracing | None = None


def _exporter(choice: ExportChoice) -> SpanExporter:
    if choice.exporter == "console":
        return ConsoleSpanExporter()
    # Only when exporting: it imports protobuf and requests (~0.2 s of start-up otherwise).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

    return OTLPSpanExporter()  # endpoint, headers, timeout, compression: from OTEL_* itself


def setup_tracing(
    service: str, *, extra_resource: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> Tracing:
    """Install Stoa's tracer provider for this process (once; later calls return the first)."""
    if _Installed.tracing is not None:
        return _Installed.tracing
    env = os.environ if environ is None else environ
    choice = export_choice(env)
    resource = resource_for(service, env, extra_resource or {})
    if choice.exporter is None:
        provider = TracerProvider(resource=resource, sampler=ParentBased(ALWAYS_OFF), id_generator=_StoaIds())
        level = logging.WARNING if "not supported" in choice.reason or "unsupported" in choice.reason else 0
        if level:
            log.warning("Tracing export off service=%s reason=%r", service, choice.reason)
    else:
        provider = TracerProvider(resource=resource, id_generator=_StoaIds())  # sampler: OTEL_TRACES_SAMPLER
        provider.add_span_processor(BatchSpanProcessor(_exporter(choice)))
        log.info("Tracing on service=%s export=%r", service, choice.reason)
    trace.set_tracer_provider(provider)
    _Installed.tracing = Tracing(provider, choice)
    return _Installed.tracing


def tracing() -> Tracing:
    """The process's tracing (set up on first use with a generic service name)."""
    return _Installed.tracing if _Installed.tracing is not None else setup_tracing("stoa")


def shutdown_tracing() -> None:
    if _Installed.tracing is not None:
        _Installed.tracing.shutdown()
        _Installed.tracing = None
