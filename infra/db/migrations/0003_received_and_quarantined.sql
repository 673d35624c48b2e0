-- What the pipeline received and what it refused, for status counts and the API.
-- Keys are object-store keys (derived from a hash of the SOP Instance UID), not PHI.

CREATE TABLE IF NOT EXISTS received_object (
    key             text PRIMARY KEY,
    source          text NOT NULL,              -- scp, import
    calling_ae      text NOT NULL DEFAULT '',
    size_bytes      bigint NOT NULL DEFAULT 0,
    received_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS quarantined_object (
    key             text PRIMARY KEY,
    stage           text NOT NULL,              -- ingest, deidentify
    reason_code     text NOT NULL,
    reason          text NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now()
);
