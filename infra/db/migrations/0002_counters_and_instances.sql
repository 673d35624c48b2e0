-- Counters of CTP @integer(Element, KeyType, width): one number per (key type, value),
-- counting up per key type, shared by every worker and kept across restarts.
-- Pseudonymous patient numbers of the built-in profile are the counter of key type
-- 'patient', keyed by patient ID (and issuer).

CREATE TABLE IF NOT EXISTS integer_key_type (
    key_type    text PRIMARY KEY,
    last_value  bigint NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS integer_value (
    key_type    text NOT NULL REFERENCES integer_key_type (key_type),
    key_value   text NOT NULL,
    value       bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_type, key_value),
    UNIQUE (key_type, value)
);

-- Carry patients numbered before this migration over to the 'patient' counter.
INSERT INTO integer_key_type (key_type, last_value)
SELECT 'patient', coalesce(max(split_part(pseudo_patient_id, '-', 2)::bigint), 0) FROM patient
ON CONFLICT (key_type) DO NOTHING;

INSERT INTO integer_value (key_type, key_value, value)
SELECT 'patient',
       CASE WHEN original_issuer = '' THEN original_patient_id
            ELSE original_patient_id || '\' || original_issuer END,
       split_part(pseudo_patient_id, '-', 2)::bigint
FROM patient
ON CONFLICT DO NOTHING;

DROP SEQUENCE IF EXISTS patient_number_seq;

-- Every de-identified object: where it came from, what it became, and which script
-- (name and SHA-256 of its text) de-identified it.
CREATE TABLE IF NOT EXISTS instance (
    id                          bigserial PRIMARY KEY,
    study                       bigint REFERENCES study (id),
    original_sop_instance_uid   text NOT NULL UNIQUE,
    pseudo_sop_instance_uid     text NOT NULL,
    original_series_uid         text NOT NULL DEFAULT '',
    pseudo_series_uid           text NOT NULL DEFAULT '',
    pseudo_patient_id           text NOT NULL DEFAULT '',
    sop_class_uid               text NOT NULL DEFAULT '',
    modality                    text NOT NULL DEFAULT '',
    size_bytes                  bigint NOT NULL DEFAULT 0,
    script_name                 text NOT NULL,
    script_sha256               text NOT NULL,
    created_at                  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS instance_study_idx ON instance (study);
CREATE INDEX IF NOT EXISTS instance_pseudo_sop_idx ON instance (pseudo_sop_instance_uid);
