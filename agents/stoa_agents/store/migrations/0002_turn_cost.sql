-- Cost from its source: each turn records how its cost is known (docs/runtime.md, "Cost of a turn") and
-- the gateway target that answered; totals count the turns whose cost is unknown (stored as 0).
ALTER TABLE stoa.turns
    ADD COLUMN IF NOT EXISTS cost_source text NOT NULL DEFAULT 'unpriced'
        CHECK (cost_source IN ('reported', 'policy', 'unpriced')),
    ADD COLUMN IF NOT EXISTS target text;
ALTER TABLE stoa.conversations ADD COLUMN IF NOT EXISTS unpriced_turns integer NOT NULL DEFAULT 0;
ALTER TABLE stoa.agent_totals ADD COLUMN IF NOT EXISTS unpriced_turns bigint NOT NULL DEFAULT 0;
