-- Jobs: every retrieve from the PACS and every export, with their parameters (PHI: study
-- UIDs, accession numbers, query keys; they stay in the index) and one item per study
-- (retrieve) or per patient (export) with its progress and outcome. Items are worked
-- independently, one message each, so a job survives the restart of any service.

CREATE TABLE IF NOT EXISTS job (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('retrieve', 'export')),
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'complete', 'incomplete', 'failed')),
    parameters      jsonb NOT NULL DEFAULT '{}',
    summary         text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS job_created_idx ON job (created_at);

CREATE TABLE IF NOT EXISTS job_item (
    job             bigint NOT NULL REFERENCES job (id) ON DELETE CASCADE,
    position        integer NOT NULL,
    line            integer,                    -- line or row of the request, if any
    key             text NOT NULL,              -- retrieve: the request key (PHI); export: pseudonymous patient ID
    study_uid       text NOT NULL DEFAULT '',   -- retrieve: the study found (PHI)
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'complete', 'incomplete', 'failed',
                                      'not-found', 'ambiguous', 'waiting')),
    expected        integer NOT NULL DEFAULT 0, -- instances the PACS holds (or to export)
    verified        integer NOT NULL DEFAULT 0, -- instances arrived (or accepted by the destination)
    missing         integer NOT NULL DEFAULT 0,
    remaining       integer NOT NULL DEFAULT 0, -- last sub-operation counts of the PACS
    completed       integer NOT NULL DEFAULT 0,
    failed          integer NOT NULL DEFAULT 0,
    warning         integer NOT NULL DEFAULT 0,
    attempts        integer NOT NULL DEFAULT 0,
    message         text NOT NULL DEFAULT '',   -- in an operator's words, no PHI
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job, position)
);

-- Where each de-identified object is stored, so it can be exported.
ALTER TABLE instance ADD COLUMN IF NOT EXISTS object_key text;
CREATE INDEX IF NOT EXISTS instance_pseudo_patient_idx ON instance (pseudo_patient_id);

-- The last time every stored object of a patient was accepted by the destination.
ALTER TABLE patient ADD COLUMN IF NOT EXISTS exported_at timestamptz;

-- Per instance and destination: sent (accepted) or failed, with the reason.
CREATE TABLE IF NOT EXISTS export_instance (
    instance        bigint NOT NULL REFERENCES instance (id) ON DELETE CASCADE,
    destination     text NOT NULL,              -- AE@host:port
    status          text NOT NULL CHECK (status IN ('sent', 'failed')),
    reason          text NOT NULL DEFAULT '',
    attempts        integer NOT NULL DEFAULT 1,
    job             bigint REFERENCES job (id) ON DELETE SET NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance, destination)
);

-- Finding whether an instance arrived: a received object's key holds the SHA-256 of its
-- SOP Instance UID (shared/ingest.py).
CREATE INDEX IF NOT EXISTS received_object_digest_idx
    ON received_object (substring(key from '[0-9a-f]{64}'));
CREATE INDEX IF NOT EXISTS quarantined_object_digest_idx
    ON quarantined_object (substring(key from '[0-9a-f]{64}'));
