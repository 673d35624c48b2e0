-- Patient counter keys that cannot collide: a backslash in the patient ID or issuer is
-- doubled, and a single backslash separates the ID from the issuer. IDs and issuers
-- without a backslash keep the key they had. Rows written before, with a backslash in
-- the patient ID, are re-keyed to the new form.
UPDATE integer_value AS v
SET key_value = CASE WHEN p.original_issuer = ''
                     THEN replace(p.original_patient_id, '\', '\\')
                     ELSE replace(p.original_patient_id, '\', '\\') || '\'
                          || replace(p.original_issuer, '\', '\\') END
FROM patient AS p
WHERE v.key_type = 'patient'
  AND (strpos(p.original_patient_id, '\') > 0 OR strpos(p.original_issuer, '\') > 0)
  AND v.value = split_part(p.pseudo_patient_id, '-', 2)::bigint;

-- An object whose pixel data carries burned-in annotation is quarantined unless an
-- operator accepted it knowingly; the acceptance is recorded with the instance.
ALTER TABLE instance
    ADD COLUMN IF NOT EXISTS burned_in_annotation_accepted boolean NOT NULL DEFAULT false;
