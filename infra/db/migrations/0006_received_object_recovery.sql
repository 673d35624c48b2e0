-- Finding the received objects that were never processed (anon serve at start, the
-- retention sweep): a received object's key begins with sha256 of its SOP Instance UID,
-- so an index on that digest of every instance answers "is this one de-identified?"
-- without a scan. The database encoding is UTF-8, so the digest never changes for a
-- value: the function may be declared immutable.
CREATE OR REPLACE FUNCTION uid_digest(uid text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT encode(sha256(convert_to(uid, 'UTF8')), 'hex') $$;

CREATE INDEX IF NOT EXISTS instance_uid_digest_idx ON instance (uid_digest(original_sop_instance_uid));

-- The operator's listing of quarantined objects by date.
CREATE INDEX IF NOT EXISTS quarantined_object_at_idx ON quarantined_object (quarantined_at);
