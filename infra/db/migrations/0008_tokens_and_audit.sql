-- API tokens, the audit trail, and the studies a query showed without their UIDs.

-- Bearer tokens of the index API. Only the SHA-256 of a token is stored: the token itself
-- is printed once, when it is created. A revoked token keeps its row (the audit trail names
-- it); its name can then be given to a new token.
CREATE TABLE IF NOT EXISTS api_token (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    role            text NOT NULL CHECK (role IN ('operator', 'phi-reader', 'admin')),
    token_sha256    bytea NOT NULL UNIQUE CHECK (octet_length(token_sha256) = 32),
    created_by      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    last_used_at    timestamptz
);

CREATE UNIQUE INDEX IF NOT EXISTS api_token_active_name_idx
    ON api_token (name) WHERE revoked_at IS NULL;

-- Who read or changed PHI or configuration, when, from where, what was asked, and the
-- outcome. Rows hold pseudonymous identifiers and parameter names, never an original value.
-- Append-only: no role may change or delete a row (the trigger below); the API's own
-- database role has only SELECT and INSERT on it (infra/db/roles.sql).
CREATE TABLE IF NOT EXISTS audit_event (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,              -- token name, or cli:<user>
    role        text NOT NULL DEFAULT '',
    client      text NOT NULL DEFAULT '',   -- remote address, or "local"
    action      text NOT NULL,              -- e.g. patient.phi, config.script.replace
    target      text NOT NULL DEFAULT '',   -- pseudonymous ID, job number, document kind
    outcome     text NOT NULL,              -- ok, not-found, denied, rate-limited, invalid, failed
    status      integer,                    -- the HTTP status answered, if any
    detail      jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX IF NOT EXISTS audit_event_at_idx ON audit_event (at);
CREATE INDEX IF NOT EXISTS audit_event_actor_idx ON audit_event (actor, at);

CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

DROP TRIGGER IF EXISTS audit_event_no_change ON audit_event;
CREATE TRIGGER audit_event_no_change BEFORE UPDATE OR DELETE ON audit_event
    FOR EACH ROW EXECUTE FUNCTION audit_event_append_only();
DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_event;
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only();

-- A query answered to a caller who may not see original values shows each study by a
-- reference instead of its Study Instance UID; a retrieve names the reference. The UID
-- (PHI) stays here, for a day.
CREATE TABLE IF NOT EXISTS query_match (
    ref         text PRIMARY KEY,
    study_uid   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS query_match_created_idx ON query_match (created_at);
