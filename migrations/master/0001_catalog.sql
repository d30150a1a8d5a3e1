-- tenantgate master catalog: plans, instances, tenants and their credentials, admin users,
-- audit log, tenant moves and per-tenant migration versions. Applied by `tenantgate setup`
-- inside one transaction; the runner records the version in tenantgate.schema_migrations.

-- Only the proxy's own role reads the catalog; tenant roles never see it.
REVOKE ALL ON SCHEMA tenantgate FROM PUBLIC;

CREATE TABLE tenantgate.plans (
    key                text PRIMARY KEY,
    display_name       text NOT NULL,
    aliases            text[] NOT NULL DEFAULT '{}',
    max_users          integer NOT NULL,
    storage_gb         integer NOT NULL,
    queries_per_day    bigint NOT NULL,
    queries_per_second integer NOT NULL,
    max_connections    integer NOT NULL,
    monthly_price      numeric(12, 2) NOT NULL,
    -- cost model rates (telemetry): per ms of latency, per row, per KiB transferred
    cost_per_ms        numeric(20, 12) NOT NULL,
    cost_per_row       numeric(20, 12) NOT NULL,
    cost_per_kib       numeric(20, 12) NOT NULL,
    features           text[] NOT NULL DEFAULT '{}'
);

INSERT INTO tenantgate.plans VALUES
  ('free',       'Free',       '{}',                        5,    1,     10000,   5,    5,      0.00,
   0.000001, 0.0000001, 0.0000005, '{basic}'),
  ('starter',    'Starter',    '{basic}',                   25,   10,    200000,  25,   20,    29.00,
   0.000001, 0.0000001, 0.0000005, '{basic,backups}'),
  ('pro',        'Pro',        '{premium,professional}',    250,  100,   5000000, 200,  100,  199.00,
   0.000001, 0.0000001, 0.0000005, '{basic,backups,query_cache,analytics}'),
  ('enterprise', 'Enterprise', '{business}',                5000, 1000,  100000000, 2000, 500, 1999.00,
   0.000001, 0.0000001, 0.0000005, '{basic,backups,query_cache,analytics,dedicated_instance,sso}');

CREATE TABLE tenantgate.instances (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    -- libpq URL the proxy provisions with (a role that may create roles and schemas)
    url         text NOT NULL,
    dedicated   boolean NOT NULL DEFAULT false,
    capacity    integer NOT NULL DEFAULT 1000 CHECK (capacity > 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenantgate.tenants (
    key             text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_]{0,62}$'),
    display_name    text NOT NULL,
    plan            text NOT NULL REFERENCES tenantgate.plans,
    status          text NOT NULL DEFAULT 'active'
                    CHECK (status IN ('trial', 'active', 'suspended', 'cancelled')),
    schema_name     text NOT NULL,
    instance        text NOT NULL REFERENCES tenantgate.instances,
    backend_role    text NOT NULL,
    -- AES-256-GCM(nonce || ciphertext) of the backend role's password, key from config
    backend_secret  bytea NOT NULL,
    pool_mode       text CHECK (pool_mode IN ('transaction', 'session')),
    pool_size       integer CHECK (pool_size > 0),
    limit_overrides jsonb NOT NULL DEFAULT '{}',
    metadata        jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (instance, schema_name)
);

CREATE TABLE tenantgate.tenant_users (
    tenant          text NOT NULL REFERENCES tenantgate.tenants ON DELETE CASCADE,
    name            text NOT NULL CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    scram_verifier  text NOT NULL CHECK (scram_verifier LIKE 'SCRAM-SHA-256$%'),
    is_service      boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name)
);

CREATE TABLE tenantgate.admin_users (
    name            text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    scram_verifier  text NOT NULL CHECK (scram_verifier LIKE 'SCRAM-SHA-256$%'),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenantgate.audit_log (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,
    action  text NOT NULL,
    tenant  text,
    detail  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_tenant_at ON tenantgate.audit_log (tenant, at);

CREATE TABLE tenantgate.tenant_moves (
    id             bigserial PRIMARY KEY,
    tenant         text NOT NULL,
    from_instance  text NOT NULL,
    to_instance    text NOT NULL,
    state          text NOT NULL,
    started_at     timestamptz NOT NULL DEFAULT now(),
    finished_at    timestamptz,
    detail         jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE tenantgate.tenant_migrations (
    tenant      text NOT NULL REFERENCES tenantgate.tenants ON DELETE CASCADE,
    version     text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, version)
);

-- Every change a proxy routes by is announced, so all replicas refresh within a second.
CREATE FUNCTION tenantgate.announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tenantgate_catalog', TG_TABLE_NAME);
    RETURN NULL;
END $$;

CREATE TRIGGER tenants_changed AFTER INSERT OR UPDATE OR DELETE ON tenantgate.tenants
    FOR EACH STATEMENT EXECUTE FUNCTION tenantgate.announce_change();
CREATE TRIGGER tenant_users_changed AFTER INSERT OR UPDATE OR DELETE ON tenantgate.tenant_users
    FOR EACH STATEMENT EXECUTE FUNCTION tenantgate.announce_change();
CREATE TRIGGER instances_changed AFTER INSERT OR UPDATE OR DELETE ON tenantgate.instances
    FOR EACH STATEMENT EXECUTE FUNCTION tenantgate.announce_change();
CREATE TRIGGER admin_users_changed AFTER INSERT OR UPDATE OR DELETE ON tenantgate.admin_users
    FOR EACH STATEMENT EXECUTE FUNCTION tenantgate.announce_change();
