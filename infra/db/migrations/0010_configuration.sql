-- Configuration an administrator changes while the system runs, and the recent warnings
-- and errors of every service (shared/index/configuration.py,
-- shared/observability/error_log.py).

-- The anonymizer script and the filter script in force, with every earlier version. A row
-- is never changed: replacing a document adds a row, and going back to what the settings
-- name (SCRIPT_PATH, FILTER_PATH) adds a row without text. The latest row of a kind is the
-- one in force; the rows before it say what was in force when. Versions are one sequence
-- over both kinds, allocated under a lock held to the end of the transaction, so a change
-- committed later always has a higher version: a service noticing that max(version) moved
-- knows something changed.
CREATE TABLE IF NOT EXISTS config_document (
    version     bigint PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('script', 'filter')),
    text        text,                       -- NULL: back to the settings' choice
    dialect     text CHECK (dialect IN ('ctp', 'rsna')),  -- scripts: how they are read
    sha256      text,                       -- of the text as UTF-8
    changed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    changed_by  text NOT NULL,              -- the name the caller gave (token, cli:<user>)
    CHECK ((text IS NULL) = (sha256 IS NULL)),
    CHECK (kind = 'script' OR dialect IS NULL)
);

CREATE INDEX IF NOT EXISTS config_document_kind_idx ON config_document (kind, version);

CREATE OR REPLACE FUNCTION config_document_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'configuration history is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

DROP TRIGGER IF EXISTS config_document_no_change ON config_document;
CREATE TRIGGER config_document_no_change BEFORE UPDATE OR DELETE ON config_document
    FOR EACH ROW EXECUTE FUNCTION config_document_append_only();

-- Switches changed while running (export_enabled: true or false). A name without a row
-- has the value of the settings.
CREATE TABLE IF NOT EXISTS runtime_setting (
    name        text PRIMARY KEY,
    value       jsonb NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    changed_by  text NOT NULL
);

-- Recent WARNING and ERROR log records of every service: the formatted message (written
-- by our code, without PHI), the logger, the structured fields, and for an exception its
-- class name only. The services keep the latest 10,000 rows.
CREATE TABLE IF NOT EXISTS service_error (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL,
    service     text NOT NULL,
    level       text NOT NULL,
    logger      text NOT NULL,
    message     text NOT NULL,
    fields      jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX IF NOT EXISTS service_error_at_idx ON service_error (at);
CREATE INDEX IF NOT EXISTS service_error_service_idx ON service_error (service, id);
