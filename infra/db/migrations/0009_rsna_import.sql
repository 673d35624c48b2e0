-- Moving a site from the RSNA Anonymizer, and the RT batch's tracking rows.

-- Date offsets imported from the RSNA Anonymizer's index keep the values its objects were
-- made with, which need not lie in 1..3650 (zero, or larger shifts). An offset is a number
-- of days into the past; a negative one moves dates forward. The engine shifts by any
-- offset; offsets this system allocates stay in 1..3650 (shared/index/phi_index.py).
ALTER TABLE patient DROP CONSTRAINT IF EXISTS patient_date_offset_days_check;
ALTER TABLE patient ADD CONSTRAINT patient_date_offset_days_check
    CHECK (date_offset_days BETWEEN -36500 AND 36500);

-- A study imported from another system's index: new objects of it get the stored
-- pseudonymous Study Instance UID and accession number instead of the keyed ones.
ALTER TABLE study ADD COLUMN IF NOT EXISTS imported boolean NOT NULL DEFAULT false;

-- A patient imported from the RSNA Anonymizer, which knew patients by Patient ID alone:
-- an object with that ID and an Issuer of Patient ID is this patient too, unless the index
-- holds a patient of that ID and issuer.
ALTER TABLE patient ADD COLUMN IF NOT EXISTS imported boolean NOT NULL DEFAULT false;

-- The rows of the RT batch's tracking_YYYYMMDD.csv, per run date: one row per new patient
-- ID and day, replaced by a later run of the same day (as in the file). Original patient
-- IDs and plan labels are PHI.
CREATE TABLE IF NOT EXISTS rt_tracking (
    run_date            date NOT NULL,
    new_patient_id      text NOT NULL,
    original_patient_id text NOT NULL,
    original_plan_id    text NOT NULL DEFAULT '',
    hospital            text NOT NULL DEFAULT '',
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_date, new_patient_id)
);
