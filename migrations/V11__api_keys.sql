-- API keys: only a SHA-256 of each secret is kept (the secret is printed
-- once, at creation). A key has one scope (read, ingest or admin), may be
-- limited to datasets and to rows (dimension = value conditions the
-- planner adds to every query), may carry its own rate, and may expire.
-- Revoked keys stay, so the audit log keeps naming them.
CREATE TABLE clue.api_keys (
    key_id      text        PRIMARY KEY,
    name        text        NOT NULL,
    secret_hash text        NOT NULL UNIQUE,
    scope       text        NOT NULL CHECK (scope IN ('read', 'ingest', 'admin')),
    datasets    text[]      NOT NULL DEFAULT '{}',
    conditions  jsonb       NOT NULL DEFAULT '[]',
    rate        double precision CHECK (rate > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    expires_at  timestamptz,
    revoked_at  timestamptz,
    revoked_by  text
);

-- One name names one live key (a revoked key's name may be reused).
CREATE UNIQUE INDEX api_keys_live_name ON clue.api_keys (name) WHERE revoked_at IS NULL;

-- Administrative actions, with who did them: a key (`key:ID name`) over
-- the API, or the operating-system user of the CLI (`cli:USER`).
CREATE TABLE clue.audit_log (
    entry_id bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text        NOT NULL,
    action   text        NOT NULL,
    subject  text        NOT NULL,
    detail   jsonb       NOT NULL DEFAULT '{}'
);
