// node-postgres (pg) conformance through the proxy. Usage: node node_pg_check.js DSN
// Prints "ok <name>" / "FAIL <name>: why" per check and "N passed, M failed"; exit 0 only
// when all pass. Tables are unqualified with a random suffix and dropped at the end.
'use strict';
const { Client } = require('pg');

const dsn = process.argv[2];
if (!dsn) { console.error('usage: node node_pg_check.js DSN'); process.exit(2); }
const t = 'tg_node_' + Math.random().toString(16).slice(2, 10);
let passed = 0, failed = 0;

async function check(name, fn) {
  try { await fn(); console.log('ok ' + name); passed++; }
  catch (e) { console.log('FAIL ' + name + ': ' + String(e && e.message || e).replace(/\n/g, ' ')); failed++; }
}
function assert(cond, msg) { if (!cond) throw new Error(msg); }

(async () => {
  const watchdog = setTimeout(() => { console.log('FAIL watchdog: timed out'); console.log(`${passed} passed, ${failed + 1} failed`); process.exit(1); }, 120000);
  const c = new Client({ connectionString: dsn, connectionTimeoutMillis: 10000, statement_timeout: 15000 });
  await check('connect', () => c.connect());
  await check('simple_query', async () => {
    const r = await c.query('SELECT 1 AS one');
    assert(r.rows[0].one === 1, 'got ' + JSON.stringify(r.rows));
  });
  await check('create_table', () => c.query(`CREATE TABLE ${t} (id int PRIMARY KEY, name text, data jsonb, at timestamptz)`));
  await check('parameters_extended_protocol', async () => {
    for (let i = 0; i < 50; i++) {
      await c.query(`INSERT INTO ${t} VALUES ($1, $2, $3, now())`, [i, 'n' + i, { i }]);
    }
    const r = await c.query(`SELECT count(*)::int AS n, sum((data->>'i')::int)::int AS s FROM ${t} WHERE id < $1`, [50]);
    assert(r.rows[0].n === 50 && r.rows[0].s === 1225, JSON.stringify(r.rows));
  });
  await check('named_prepared_statements', async () => {
    for (let i = 0; i < 30; i++) {
      const r = await c.query({ name: 'by_id', text: `SELECT name FROM ${t} WHERE id = $1`, values: [i % 50] });
      assert(r.rows[0].name === 'n' + (i % 50), JSON.stringify(r.rows));
    }
  });
  await check('transaction_rollback', async () => {
    await c.query('BEGIN');
    await c.query(`INSERT INTO ${t} VALUES (1000, 'x', null, null)`);
    await c.query('ROLLBACK');
    const r = await c.query(`SELECT count(*)::int AS n FROM ${t} WHERE id = 1000`);
    assert(r.rows[0].n === 0, 'row survived rollback');
  });
  await check('error_sqlstate_and_recovery', async () => {
    let code = null;
    try { await c.query('SELECT 1/0'); } catch (e) { code = e.code; }
    assert(code === '22012', 'code ' + code);
    await c.query('BEGIN');
    try { await c.query(`INSERT INTO ${t} VALUES (1, 'dup', null, null)`); } catch (e) { code = e.code; }
    assert(code === '23505', 'code ' + code);
    let aborted = null;
    try { await c.query('SELECT 1'); } catch (e) { aborted = e.code; }
    assert(aborted === '25P02', 'code ' + aborted);
    await c.query('ROLLBACK');
    const r = await c.query('SELECT 2 AS two');
    assert(r.rows[0].two === 2, 'connection unusable');
  });
  await check('large_result', async () => {
    const r = await c.query('SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g');
    assert(r.rows.length === 20000 && r.rows[19999].g === 20000, 'rows ' + r.rows.length);
  });
  await check('concurrent_clients', async () => {
    const others = [0, 1, 2].map(() => new Client({ connectionString: dsn, connectionTimeoutMillis: 10000 }));
    await Promise.all(others.map((o) => o.connect()));
    await Promise.all(others.map(async (o, k) => {
      for (let i = 0; i < 100; i++) {
        const r = await o.query({ name: 'k', text: 'SELECT $1::int + $2::int AS s', values: [i, k] });
        assert(r.rows[0].s === i + k, 'bad sum');
      }
    }));
    await Promise.all(others.map((o) => o.end()));
  });
  await check('cleanup', () => c.query(`DROP TABLE IF EXISTS ${t}`));
  await c.end().catch(() => {});
  clearTimeout(watchdog);
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
})();
