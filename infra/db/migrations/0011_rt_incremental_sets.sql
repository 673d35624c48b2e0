-- rt-relinker's incremental set check (shared/rt/set_state.py): instead of re-reading and
-- re-checking every object of a study on each arrival, each study keeps counters, the
-- problems waiting for a UID, the objects waiting for a link and the frames of reference
-- its structure sets declare; an arrival updates only what concerns it.
--
-- Existing rows: rt_object rows get in_state = false, and the first arrival in their
-- study applies them (under the study's lock) before its own; until then the study's
-- rt_set row keeps the problems the full check wrote. Nothing is computed here.

-- The order objects were recorded in (the full check's order), and whether the object is
-- in its study's state. The rewrite numbers existing rows in their stored order.
ALTER TABLE rt_object ADD COLUMN IF NOT EXISTS seq bigserial;
ALTER TABLE rt_object ADD COLUMN IF NOT EXISTS in_state boolean NOT NULL DEFAULT false;
CREATE UNIQUE INDEX IF NOT EXISTS rt_object_seq_idx ON rt_object (seq);
CREATE INDEX IF NOT EXISTS rt_object_pending_idx ON rt_object (pseudo_study_uid)
    WHERE NOT in_state;
CREATE INDEX IF NOT EXISTS rt_object_study_modality_idx
    ON rt_object (pseudo_study_uid, modality);
CREATE INDEX IF NOT EXISTS rt_object_study_frame_idx
    ON rt_object (pseudo_study_uid, frame_of_reference_uid);

-- NULL: the set's problems are those of its state (read them with shared.rt.store);
-- a list: what a relinker of an earlier version found.
ALTER TABLE rt_set ALTER COLUMN problems DROP NOT NULL;

-- Counters per study: objects, modality, series, frame (FrameOfReferenceUID), holders
-- (objects with one), declared-frame (references of structure sets declaring it),
-- patient (PatientID), problems (rows of rt_problem per code), unlinked (rows of
-- rt_unlinked per modality). Updated by every arrival: n is in no index, so that the
-- updates stay on their page (HOT).
CREATE TABLE IF NOT EXISTS rt_set_count (
    pseudo_study_uid text NOT NULL,
    dimension        text NOT NULL,
    value            text NOT NULL,
    n                integer NOT NULL,
    PRIMARY KEY (pseudo_study_uid, dimension, value)
);

-- The most frequent value of the dimensions frame, declared-frame and patient (the
-- smallest, by code point, on ties), changed when another value overtakes it.
CREATE TABLE IF NOT EXISTS rt_set_principal (
    pseudo_study_uid text NOT NULL,
    dimension        text NOT NULL,
    value            text NOT NULL,
    PRIMARY KEY (pseudo_study_uid, dimension)
);

-- Problems of one object: a reference no object of the set answers yet (target
-- 'instance', 'series' or 'frame-of-reference' and the uid: the row goes when an object
-- answering it arrives), or a reference to another study (target NULL: it stays).
CREATE TABLE IF NOT EXISTS rt_problem (
    pseudo_study_uid text NOT NULL,
    object_uid       text NOT NULL,
    code             text NOT NULL,
    modality         text NOT NULL,
    detail           text NOT NULL,
    target           text,
    uid              text
);
CREATE INDEX IF NOT EXISTS rt_problem_waiting_idx ON rt_problem (pseudo_study_uid, target, uid);

-- RT objects that make none of the links they must yet (RTPLAN -> RTSTRUCT, RTDOSE ->
-- RTPLAN, RTSTRUCT -> CT), and the UIDs that would link each (to an object of modality
-- target).
CREATE TABLE IF NOT EXISTS rt_unlinked (
    pseudo_study_uid text NOT NULL,
    object_uid       text NOT NULL,
    modality         text NOT NULL,
    PRIMARY KEY (pseudo_study_uid, object_uid)
);
CREATE TABLE IF NOT EXISTS rt_link (
    pseudo_study_uid text NOT NULL,
    object_uid       text NOT NULL,
    uid              text NOT NULL,
    target           text NOT NULL,
    PRIMARY KEY (pseudo_study_uid, uid, object_uid)
);
CREATE INDEX IF NOT EXISTS rt_link_object_idx ON rt_link (pseudo_study_uid, object_uid);

-- Where each structure set (rt_object.seq) first declares each frame of reference: the
-- earliest one recorded names the set's frame in frame-of-reference-mismatch problems.
CREATE TABLE IF NOT EXISTS rt_declaration (
    pseudo_study_uid text NOT NULL,
    frame_uid        text NOT NULL,
    seq              bigint NOT NULL,
    object_uid       text NOT NULL,
    modality         text NOT NULL,
    path             text NOT NULL,
    PRIMARY KEY (pseudo_study_uid, frame_uid, seq)
);
