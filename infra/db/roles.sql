-- The database role of the index API in a deployment: what it may read and change.
--
-- Run once as the database owner, after the migrations (anon migrate), and again after an
-- upgrade that adds tables:
--     psql "$OWNER_DATABASE_URL" -f infra/db/roles.sql
-- then set its password (ALTER ROLE anon_api PASSWORD '...') and give index-api
-- DATABASE_URL=postgresql://anon_api:...@host/db. The API never runs
-- migrations with this role: it finds them applied.
--
-- The audit trail is append-only for this role: SELECT and INSERT only, no UPDATE, DELETE or
-- TRUNCATE, so a compromised API cannot erase what it did. (The table's trigger refuses
-- changes for every role, the owner included; removing old records is a deliberate act of
-- the owner, who must drop the trigger to do it.)

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon_api') THEN
        CREATE ROLE anon_api LOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO anon_api;
-- Reading the index, jobs, sets, quarantine records, configuration and the audit trail.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO anon_api;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO anon_api;

-- What the API itself writes.
GRANT INSERT ON audit_event TO anon_api;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_event FROM anon_api;
GRANT INSERT, UPDATE ON api_token TO anon_api;               -- created, revoked, last used
GRANT INSERT, UPDATE, DELETE ON query_match TO anon_api;     -- query references
GRANT INSERT ON config_document TO anon_api;                 -- script and filter replaced
GRANT INSERT, UPDATE ON runtime_setting TO anon_api;         -- the export switch
GRANT INSERT, DELETE ON quarantined_object TO anon_api;      -- release and purge
GRANT INSERT, DELETE ON service_error TO anon_api;           -- its own warnings, pruned
GRANT INSERT ON site TO anon_api;                            -- a first start on an empty index
