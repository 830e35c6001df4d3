-- Stoa conversation runtime: conversations, turns, exactly-once bookkeeping, outbox, totals.
CREATE TABLE IF NOT EXISTS stoa.conversations (
    id              uuid PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    spec            jsonb NOT NULL,
    phase           text NOT NULL DEFAULT 'Pending',
    reason          text NOT NULL DEFAULT '',
    next_seq        integer NOT NULL DEFAULT 1,
    turns           integer NOT NULL DEFAULT 0,
    last_speaker    text,
    tokens_in       bigint NOT NULL DEFAULT 0,
    tokens_out      bigint NOT NULL DEFAULT 0,
    cost_usd        numeric(18, 8) NOT NULL DEFAULT 0,
    parked_message  text,
    traceparent     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS stoa.turns (
    conversation_id uuid NOT NULL REFERENCES stoa.conversations (id) ON DELETE CASCADE,
    seq             integer NOT NULL,
    speaker         text NOT NULL,
    role            text NOT NULL,
    content         text NOT NULL,
    tokens_in       integer NOT NULL DEFAULT 0,
    tokens_out      integer NOT NULL DEFAULT 0,
    cost_usd        numeric(18, 8) NOT NULL DEFAULT 0,
    model           text NOT NULL DEFAULT '',
    duration_ms     integer NOT NULL DEFAULT 0,
    pod             text NOT NULL DEFAULT '',
    message_id      text NOT NULL,
    traceparent     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, seq)
);

CREATE TABLE IF NOT EXISTS stoa.processed_messages (
    message_id      text PRIMARY KEY,
    conversation_id uuid REFERENCES stoa.conversations (id) ON DELETE CASCADE,
    agent           text NOT NULL,
    pod             text NOT NULL,
    outcome         text NOT NULL,
    processed_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS stoa.outbox (
    id              bigserial PRIMARY KEY,
    message_id      text NOT NULL UNIQUE,
    conversation_id uuid NOT NULL REFERENCES stoa.conversations (id) ON DELETE CASCADE,
    seq             integer NOT NULL,
    routing_key     text NOT NULL,
    body            bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    publish_count   integer NOT NULL DEFAULT 0,
    UNIQUE (conversation_id, seq)
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON stoa.outbox (id) WHERE published_at IS NULL;

CREATE TABLE IF NOT EXISTS stoa.agent_totals (
    agent           text PRIMARY KEY,
    turns           bigint NOT NULL DEFAULT 0,
    tokens_in       bigint NOT NULL DEFAULT 0,
    tokens_out      bigint NOT NULL DEFAULT 0,
    cost_usd        numeric(18, 8) NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Which replica of each agent is consuming (the single active consumer), for Agent status.
CREATE TABLE IF NOT EXISTS stoa.agent_activity (
    agent           text PRIMARY KEY,
    pod             text NOT NULL,
    active_since    timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    takeovers       integer NOT NULL DEFAULT 0,
    previous_pod    text
);

CREATE TABLE IF NOT EXISTS stoa.message_errors (
    id              bigserial PRIMARY KEY,
    message_id      text NOT NULL,
    agent           text NOT NULL,
    pod             text NOT NULL,
    error           text NOT NULL,
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS message_errors_by_message ON stoa.message_errors (message_id, id);

CREATE TABLE IF NOT EXISTS stoa.dead_letters (
    id              bigserial PRIMARY KEY,
    message_id      text NOT NULL UNIQUE,
    conversation_id uuid,
    agent           text NOT NULL,
    death_reason    text NOT NULL,
    deliveries      integer,
    reason          text NOT NULL,
    body            bytea NOT NULL,
    headers         jsonb NOT NULL DEFAULT '{}'::jsonb,
    at              timestamptz NOT NULL DEFAULT now()
);
