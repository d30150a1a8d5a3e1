-- Trusted service users: logins not tied to one tenant that name the tenant per
-- transaction with a header comment (/* tenant: acme */ ...).
CREATE TABLE tenantgate.service_users (
    name            text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    scram_verifier  text NOT NULL CHECK (scram_verifier LIKE 'SCRAM-SHA-256$%'),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER service_users_changed AFTER INSERT OR UPDATE OR DELETE ON tenantgate.service_users
    FOR EACH STATEMENT EXECUTE FUNCTION tenantgate.announce_change();
