-- Tenant template of the sample SaaS (a small project/task tracker).
-- Run with search_path set to the tenant's schema, as the tenant's role, so every
-- object lands in that schema owned by that role: names stay unqualified.
-- No BEGIN/COMMIT: the caller decides the transaction. IF NOT EXISTS keeps a rerun harmless.

CREATE TABLE IF NOT EXISTS users (
    id          bigserial   PRIMARY KEY,
    email       text        NOT NULL UNIQUE,
    name        text        NOT NULL,
    role        text        NOT NULL DEFAULT 'member'
                            CHECK (role IN ('owner', 'admin', 'member')),
    active      boolean     NOT NULL DEFAULT true,
    last_login  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS projects (
    id          bigserial   PRIMARY KEY,
    name        text        NOT NULL,
    owner_id    bigint      NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tasks (
    id          bigserial   PRIMARY KEY,
    project_id  bigint      NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    title       text        NOT NULL,
    status      text        NOT NULL DEFAULT 'todo'
                            CHECK (status IN ('todo', 'doing', 'done')),
    priority    integer     NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 4),
    assignee_id bigint      REFERENCES users (id) ON DELETE SET NULL,
    due_date    date,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- "Monthly active users": WHERE last_login > now() - interval '30 days'.
CREATE INDEX IF NOT EXISTS users_last_login_idx ON users (last_login) WHERE active;
-- Foreign keys (PostgreSQL does not index the referencing side by itself).
CREATE INDEX IF NOT EXISTS projects_owner_id_idx ON projects (owner_id);
CREATE INDEX IF NOT EXISTS tasks_project_status_idx ON tasks (project_id, status);
CREATE INDEX IF NOT EXISTS tasks_assignee_idx ON tasks (assignee_id) WHERE assignee_id IS NOT NULL;
-- Open work by due date ("what is overdue").
CREATE INDEX IF NOT EXISTS tasks_open_due_idx ON tasks (due_date) WHERE status <> 'done';
