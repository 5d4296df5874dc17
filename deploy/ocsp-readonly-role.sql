-- The OCSP responder's PostgreSQL role: it reads five tables and writes nothing
-- (docs/decisions/0018-read-only-ocsp-tier.md). Run as the owner of the agentca schema:
--
--   psql -d agentca -f deploy/ocsp-readonly-role.sql
--   psql -d agentca -c "\password agentca_ocsp"
--
-- then give the responder  ocsp_database_url = "postgresql://agentca_ocsp:...@host/agentca"
-- (AGENTCA_OCSP_DATABASE_URL). Idempotent: safe to run again after an upgrade.
DO $$
BEGIN
    CREATE ROLE agentca_ocsp LOGIN;
EXCEPTION WHEN duplicate_object THEN
    NULL;
END
$$;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM agentca_ocsp;
GRANT USAGE ON SCHEMA public TO agentca_ocsp;
GRANT SELECT ON issuers, certificates, status_changes, ocsp_signers, ocsp_responses TO agentca_ocsp;
-- Every session of the role is read-only as well: on a server where PUBLIC may still create in
-- schema public (PostgreSQL 14 and older, or a database made from such a template) the grants
-- above alone would let the role create and fill tables of its own.
ALTER ROLE agentca_ocsp SET default_transaction_read_only = on;
