-- The answer a keyed request gave (`Idempotency-Key` on the events
-- endpoint), kept with its claim so a repeat replays it.
ALTER TABLE clue.idempotency ADD COLUMN response jsonb;
