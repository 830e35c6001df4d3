"""Stoa's telemetry: OpenTelemetry tracing set up from the standard ``OTEL_*`` variables, the GenAI
semantic-convention names (spans, attributes, metrics), SLO math, Prometheus rules and the dashboard.

Pure modules: ``genai``, ``ids``, ``slo``, ``rules``, ``dashboard``, ``catalog``. Shell: ``otel``
(the SDK), ``gen_ai_metrics`` (prometheus_client instruments).
"""
