-- Online tenant moves: a tenant can be paused through the catalog (every proxy replica
-- holds its new transactions while its in-flight ones finish), and each move records
-- what it did so that an interrupted one can be rolled back.

ALTER TABLE tenantgate.tenants ADD COLUMN IF NOT EXISTS paused boolean NOT NULL DEFAULT false;

-- The mover refreshes this while it runs; proxies roll back moves whose mover died.
ALTER TABLE tenantgate.tenant_moves
    ADD COLUMN IF NOT EXISTS heartbeat_at timestamptz NOT NULL DEFAULT now();

-- At most one unfinished move per tenant.
CREATE UNIQUE INDEX IF NOT EXISTS tenant_moves_one_open
    ON tenantgate.tenant_moves (tenant) WHERE finished_at IS NULL;
