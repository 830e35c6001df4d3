-- Observability (issue 11): the turn records the SLOs are computed from, and synthetic (probe) conversations.
-- stoa.processed_messages already has one row per turn outcome (stored, model-failed, dead-lettered); it
-- gains the turn's latency (delivery of the turn message to the commit) and an index for per-agent windows.
ALTER TABLE stoa.processed_messages ADD COLUMN IF NOT EXISTS turn_ms integer;
CREATE INDEX IF NOT EXISTS processed_messages_by_agent_time
    ON stoa.processed_messages (agent, processed_at) INCLUDE (outcome, turn_ms);
-- SLO history outlives a transcript purge: a purged conversation's records lose their link, not their outcome.
ALTER TABLE stoa.processed_messages DROP CONSTRAINT IF EXISTS processed_messages_conversation_id_fkey;
ALTER TABLE stoa.processed_messages ADD CONSTRAINT processed_messages_conversation_id_fkey
    FOREIGN KEY (conversation_id) REFERENCES stoa.conversations (id) ON DELETE SET NULL;
-- Synthetic probe conversations: never counted in agent totals, never listed with user conversations.
ALTER TABLE stoa.conversations ADD COLUMN IF NOT EXISTS synthetic boolean NOT NULL DEFAULT false;
