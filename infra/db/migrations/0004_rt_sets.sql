-- The reference graph of de-identified objects per pseudonymous study, kept by
-- rt-relinker, and the status of each study's set: complete, waiting for objects, or
-- inconsistent, with the problems (UIDs and sequence paths, no PHI).

CREATE TABLE IF NOT EXISTS rt_object (
    pseudo_sop_instance_uid text PRIMARY KEY,
    pseudo_study_uid        text NOT NULL,
    frame_of_reference_uid  text,
    modality                text NOT NULL DEFAULT '',
    sop_class_uid           text NOT NULL DEFAULT '',
    object_key              text NOT NULL,
    node                    jsonb NOT NULL,
    recorded_at             timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS rt_object_study_idx ON rt_object (pseudo_study_uid);
CREATE INDEX IF NOT EXISTS rt_object_frame_idx ON rt_object (frame_of_reference_uid);

CREATE TABLE IF NOT EXISTS rt_set (
    pseudo_study_uid    text PRIMARY KEY,
    kind                text NOT NULL CHECK (kind IN ('rt', 'other')),
    status              text NOT NULL CHECK (status IN ('complete', 'waiting', 'inconsistent')),
    objects             integer NOT NULL,
    problems            jsonb NOT NULL DEFAULT '[]',
    checked_at          timestamptz NOT NULL DEFAULT now()
);
