-- PHI index: the site identity, and per patient and study the original and
-- pseudonymous identifiers. Every original value here is PHI.

CREATE TABLE IF NOT EXISTS site (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    site_id     text NOT NULL CHECK (site_id ~ '^[0-9]{6}$'),
    secret      bytea NOT NULL CHECK (octet_length(secret) >= 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Numbers for pseudonymous patient IDs (SITEID-000001, ...). A sequence never hands
-- out a number twice; a number drawn by an insert that loses a race is a harmless gap.
CREATE SEQUENCE IF NOT EXISTS patient_number_seq START 1;

CREATE TABLE IF NOT EXISTS patient (
    id                      bigserial PRIMARY KEY,
    original_patient_id     text NOT NULL,
    original_issuer         text NOT NULL DEFAULT '',
    original_patient_name   text NOT NULL DEFAULT '',
    pseudo_patient_id       text NOT NULL UNIQUE,
    pseudo_patient_name     text NOT NULL,
    date_offset_days        integer NOT NULL CHECK (date_offset_days BETWEEN 1 AND 3650),
    created_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (original_patient_id, original_issuer)
);

CREATE TABLE IF NOT EXISTS study (
    id                      bigserial PRIMARY KEY,
    patient                 bigint NOT NULL REFERENCES patient (id),
    original_study_uid      text NOT NULL UNIQUE,
    pseudo_study_uid        text NOT NULL UNIQUE,
    original_study_date     text NOT NULL DEFAULT '',
    pseudo_study_date       text NOT NULL DEFAULT '',
    original_accession      text NOT NULL DEFAULT '',
    pseudo_accession        text NOT NULL DEFAULT '',
    created_at              timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS study_patient_idx ON study (patient);
