-- Sample data for one tenant of the sample SaaS, in the schema of the current
-- search_path (names unqualified), after migrations/tenant/ has been applied.
-- `tenantgate setup --sample` runs it for each sample tenant whose users table is empty,
-- with :tenant_users replaced by the tenant's user count. Seeded by schema name: the
-- same schema and count give the same data (apart from now()).

-- Seeded per schema: reproducible, yet each tenant gets different data.
SELECT setseed((hashtext(current_schema()) & 2147483647) / 2147483648.0);

-- Users: #1 is the owner, ~5% admins, the rest members; ~6% deactivated.
-- last_login: ~12% never logged in; the others skewed towards recent days
-- (random()^2 * 90 days), so 7-, 30- and 90-day active counts all differ.
INSERT INTO users (email, name, role, active, last_login, created_at)
SELECT lower(f.first || '.' || l.last || g) || '@' || current_schema() || '.example',
       f.first || ' ' || l.last,
       CASE WHEN g = 1 THEN 'owner'
            WHEN g <= 1 + greatest(1, :tenant_users / 20) THEN 'admin'
            ELSE 'member' END,
       g = 1 OR g % 17 <> 0,
       CASE WHEN g > 1 AND random() < 0.12 THEN NULL
            ELSE now() - random() ^ 2 * interval '90 days' END,
       now() - interval '90 days' - random() * interval '640 days'
FROM generate_series(1, :tenant_users) AS g
CROSS JOIN LATERAL (SELECT (ARRAY['Ada','Ben','Chloe','Dev','Emma','Farid','Grace','Hiro',
        'Ines','Jonas','Kemi','Liam','Maya','Noor','Omar','Priya','Quinn','Rosa',
        'Sven','Tara','Uma','Victor','Wen','Yusuf','Zoe'])[1 + (g * 7) % 25] AS first) AS f
CROSS JOIN LATERAL (SELECT (ARRAY['Ahmed','Baker','Costa','Dubois','Evans','Fischer',
        'Garcia','Hansen','Ito','Jensen','Kowalski','Lopez','Meyer','Nakamura',
        'Okafor','Patel','Rossi','Silva','Tanaka','Weber'])[1 + (g * 13) % 20] AS last) AS l;

-- Projects: one per ~4 users, owned by owners/admins mostly.
INSERT INTO projects (name, owner_id, created_at)
SELECT (ARRAY['Website relaunch','Mobile app','Billing v2','Onboarding','Data warehouse',
              'Security audit','Customer portal','Q3 campaign','API gateway','Support tooling',
              'Search','Reporting'])[1 + (p - 1) % 12]
         || CASE WHEN p > 12 THEN ' ' || (p - 1) / 12 + 1 ELSE '' END,
       u.ids[1 + floor(random() * least(cardinality(u.ids), 1 + greatest(1, :tenant_users / 20) + 3))::int],
       now() - interval '80 days' - random() * interval '300 days'
FROM generate_series(1, greatest(2, :tenant_users / 4)) AS p,
     (SELECT array_agg(id ORDER BY id) AS ids FROM users) AS u;

-- Tasks: 3 to 14 per project; older ones mostly done; ~15% unassigned.
INSERT INTO tasks (project_id, title, status, priority, assignee_id, due_date, created_at)
SELECT pr.id,
       (ARRAY['Write spec','Review PR','Fix login bug','Update docs','Design mockups',
              'Load test','Migrate data','Add metrics','Customer call','Refactor module',
              'Release notes','Triage backlog'])[1 + floor(random() * 12)::int] || ' #' || t,
       CASE WHEN r.x < 0.55 THEN 'done' WHEN r.x < 0.75 THEN 'doing' ELSE 'todo' END,
       1 + floor(random() * random() * 4)::int,          -- most tasks are priority 1-2
       CASE WHEN random() < 0.15 THEN NULL
            ELSE u.ids[1 + floor(random() * cardinality(u.ids))::int] END,
       CASE WHEN random() < 0.2 THEN NULL
            ELSE current_date + (floor(random() * 75) - 30)::int END,
       pr.created_at + random() * (now() - pr.created_at)
FROM projects AS pr
CROSS JOIN LATERAL generate_series(1, 3 + (pr.id * 5) % 12) AS t
CROSS JOIN LATERAL (SELECT random() AS x, t AS _) AS r
CROSS JOIN (SELECT array_agg(id ORDER BY id) AS ids FROM users) AS u;
