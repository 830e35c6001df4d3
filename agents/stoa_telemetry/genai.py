"""OpenTelemetry GenAI (and messaging/database) semantic-convention names Stoa uses (pure).

Spans follow https://opentelemetry.io/docs/specs/semconv/gen-ai/: ``invoke_agent {agent}`` for a turn,
``chat {model}`` for a model call; the attributes below. Message content is recorded only when
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` (the variable the OpenTelemetry GenAI
instrumentations read).
"""

from __future__ import annotations

from collections.abc import Mapping

# Operation names (gen_ai.operation.name).
OP_CHAT = "chat"
OP_INVOKE_AGENT = "invoke_agent"
OP_CREATE_AGENT = "create_agent"

# GenAI attributes.
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
AGENT_NAME = "gen_ai.agent.name"
AGENT_ID = "gen_ai.agent.id"
CONVERSATION_ID = "gen_ai.conversation.id"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_STREAM = "gen_ai.request.stream"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
TOKEN_TYPE = "gen_ai.token.type"  # noqa: S105 (an attribute name, not a secret)
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"

TOKEN_INPUT = "input"  # noqa: S105 (gen_ai.token.type values)
TOKEN_OUTPUT = "output"  # noqa: S105
# Providers behind an OpenAI-compatible endpoint are not known to the caller: semconv's generic value for
# an OpenAI-compatible API is "openai"; the gateway names the target in stoa.target.
PROVIDER_OPENAI = "openai"

# Messaging (RabbitMQ) and database (PostgreSQL) attributes for the publish and commit spans.
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_CONVERSATION_ID = "messaging.message.conversation_id"
MESSAGING_DELIVERY_COUNT = "messaging.rabbitmq.message.delivery_count"
DB_SYSTEM = "db.system.name"
DB_OPERATION = "db.operation.name"
DB_COLLECTION = "db.collection.name"

# Stoa's own attributes (namespaced, as semconv asks for vendor attributes).
STOA_NAMESPACE = "stoa.namespace"
STOA_CONVERSATION = "stoa.conversation.name"
STOA_TURN_SEQ = "stoa.turn.seq"
STOA_TURN_OUTCOME = "stoa.turn.outcome"
STOA_POD = "stoa.pod"
STOA_REDELIVERED = "stoa.delivery.redelivered"
STOA_SYNTHETIC = "stoa.synthetic"
STOA_POLICY = "stoa.policy"
STOA_TARGET = "stoa.target"
STOA_ATTEMPT = "stoa.attempt"
STOA_DECISION = "stoa.attempt.decision"  # ok, retry, next_target, fatal
STOA_FAILOVER_REASON = "stoa.fallback.reason"
STOA_COST_USD = "stoa.cost_usd"
STOA_LINK_KIND = "stoa.link"  # on span links: previous_turn, interrupted_attempt, conversation_start

LINK_PREVIOUS = "previous_turn"
LINK_INTERRUPTED = "interrupted_attempt"

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"


def invoke_agent_span(agent: str) -> str:
    return f"{OP_INVOKE_AGENT} {agent}"


def chat_span(model: str) -> str:
    return f"{OP_CHAT} {model}"


def publish_span(destination: str) -> str:
    return f"send {destination}"


def commit_span(collection: str = "stoa.turns") -> str:
    return f"COMMIT {collection}"


def capture_content(environ: Mapping[str, str]) -> bool:
    """Message content goes on spans only when explicitly enabled."""
    return environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("1", "true", "yes")


def error_type_for_status(status: int) -> str:
    """``error.type`` of an HTTP answer: the status code, as semconv suggests for HTTP errors."""
    return str(status)
