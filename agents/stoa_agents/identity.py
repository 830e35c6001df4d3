"""Who an agent is to the runtime (pure). See docs/runtime.md "Agent identity".

Agents are namespaced resources, and namespaces may share one broker vhost and one database, so every
per-agent resource (queue, dead-letter queue, activity and totals rows, memory schema) is keyed by the
*agent key* ``<namespace>/<name>``. Without a namespace (``stoa run``) the key is the bare name. The turn
protocol (``from``/``to``) and the transcript keep bare names: the participants of a conversation are the
agents of the conversation's namespace, the part of its runtime name before ``/``.
"""

from __future__ import annotations

import hashlib
import re

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
PG_IDENTIFIER_MAX = 63  # bytes; PostgreSQL silently truncates longer identifiers
_HASH_CHARS = 8


def agent_key(namespace: str, agent: str) -> str:
    """``<namespace>/<agent>``, or ``<agent>`` without a namespace; both parts must be DNS labels."""
    if len(agent) > 63 or not DNS_LABEL.fullmatch(agent):
        raise ValueError(f"not an agent name: {agent!r}")
    if not namespace:
        return agent
    if len(namespace) > 63 or not DNS_LABEL.fullmatch(namespace):
        raise ValueError(f"not a namespace: {namespace!r}")
    return f"{namespace}/{agent}"


def split_agent_key(key: str) -> tuple[str, str]:
    """``(namespace, agent)`` of an agent key (namespace ``""`` when unscoped); validates it."""
    namespace, _, agent = key.rpartition("/")
    agent_key(namespace, agent)
    return namespace, agent


def conversation_namespace(conversation: str) -> str:
    """The namespace of a conversation runtime name ``<namespace>/<name>``; ``""`` for a bare name."""
    namespace, sep, _ = conversation.partition("/")
    return namespace if sep else ""


def participant_key(conversation: str, agent: str) -> str:
    """The key of participant ``agent`` (a bare Agent name) of ``conversation`` (a runtime name)."""
    return agent_key(conversation_namespace(conversation), agent)


def archived_name(conversation: str, conversation_id: str) -> str:
    """Where a kept transcript goes when its name is freed: ``<runtime name>@<first 8 of its id>`` (the
    namespace part, and so every participant key, stays the same)."""
    return f"{conversation}@{conversation_id.replace('-', '')[:8]}"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_CHARS]


def memory_schema(key: str) -> str:
    """The private PostgreSQL schema of one agent: a plain identifier of at most 63 bytes.

    Unscoped: ``agent_<name>`` (``-`` -> ``_``). Scoped: ``agent_<namespace>_<name>_<hash>``, where the hash
    (8 hex chars of sha256 of the key) keeps distinct keys apart after the ``-`` -> ``_`` mapping
    (``a-b/c`` and ``a/b-c``). Either form longer than 63 bytes is cut and ends with the hash.
    """
    namespace, agent = split_agent_key(key)
    readable = ("agent_" + (f"{namespace}_{agent}" if namespace else agent)).replace("-", "_")
    if not namespace and len(readable) <= PG_IDENTIFIER_MAX:
        return readable
    digest = _short_hash(key)
    head = readable[: PG_IDENTIFIER_MAX - _HASH_CHARS - 1].rstrip("_")
    return f"{head}_{digest}"
