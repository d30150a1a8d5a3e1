//! Micro-benchmarks of the per-message hot path: header framing over a typical pgbench
//! response, startup routing, and the relay's statement checks.
//! Run: `cargo bench --bench hot_path`. The load comparison is `benches/load.sh`.

use bytes::{BufMut, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tenantgate::backend::prepared::PreparedCache;
use tenantgate::frontend::relay::{self, Statements, Tracker};
use tenantgate::protocol::frame;
use tenantgate::router::startup;

/// RowDescription + DataRow + CommandComplete + ReadyForQuery, as for `pgbench -S`.
fn select_response() -> BytesMut {
    let mut b = BytesMut::new();
    let at = frame::begin(&mut b, b'T');
    b.put_i16(1);
    frame::put_cstr(&mut b, b"abalance");
    b.extend_from_slice(&[
        0, 0, 64, 6, 0, 3, 0, 0, 0, 23, 0, 4, 255, 255, 255, 255, 0, 0,
    ]);
    frame::end(&mut b, at);
    let at = frame::begin(&mut b, b'D');
    b.put_i16(1);
    b.put_i32(4);
    b.extend_from_slice(b"1234");
    frame::end(&mut b, at);
    let at = frame::begin(&mut b, b'C');
    frame::put_cstr(&mut b, b"SELECT 1");
    frame::end(&mut b, at);
    let at = frame::begin(&mut b, b'Z');
    b.put_u8(b'I');
    frame::end(&mut b, at);
    b
}

fn framing(c: &mut Criterion) {
    let resp = select_response();
    c.bench_function("frame: scan pgbench -S response (4 messages)", |bench| {
        bench.iter(|| {
            let mut buf = black_box(&resp[..]);
            let mut n = 0;
            while let Ok(Some(h)) = frame::peek_header(buf) {
                if h.tag == b'Z' {
                    n += buf[5] as usize;
                }
                buf = &buf[h.total()..];
            }
            n
        })
    });
    let mut q = BytesMut::new();
    frame::write_query(
        &mut q,
        "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
    );
    c.bench_function("relay: dirty-text check of a pgbench query", |bench| {
        bench.iter(|| relay::text_dirties(black_box(&q[5..])))
    });
    c.bench_function("relay: CommandComplete tag effect", |bench| {
        bench.iter(|| relay::tag_effect(black_box(b"SELECT 1")))
    });
}

fn routing(c: &mut Criterion) {
    let params: Vec<(String, String)> = [
        ("user", "app@acme"),
        ("database", "tenantgate"),
        ("application_name", "pgbench"),
        ("client_encoding", "UTF8"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    c.bench_function("router: resolve tenant at startup", |bench| {
        bench.iter(|| startup::resolve(black_box(&params), |d| d == "acme"))
    });
}

fn prepared(c: &mut Criterion) {
    let mut body = Vec::new();
    body.extend_from_slice(b"P_0\0SELECT abalance FROM pgbench_accounts WHERE aid = $1\0\0\0");
    let mut stmts = Statements::default();
    let mut cache = PreparedCache::new(256);
    let mut t = Tracker::new();
    let mut out = BytesMut::new();
    relay::forward_named_parse(&body, &mut stmts, &mut cache, &mut t, &mut out);
    let stmt = stmts.get(b"P_0").unwrap().clone();
    c.bench_function(
        "relay: Bind of a cached prepared statement (lookup + rename)",
        |bench| {
            bench.iter(|| {
                out.clear();
                relay::ensure_prepared(black_box(&stmt), &mut cache, &mut t, &mut out);
                frame::write_bind(
                    &mut out,
                    b"",
                    stmt.server_name.as_bytes(),
                    &[0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0],
                );
                out.len()
            })
        },
    );
}

/// A realistic statement mix of the sample SaaS.
const MIX: &[&str] = &[
    "SELECT abalance FROM pgbench_accounts WHERE aid = 48213",
    "SELECT id, email, name FROM users WHERE active AND last_login > now() - interval '30 days'",
    "INSERT INTO tasks (project_id, title, status, priority) VALUES (4, 'Write spec', 'todo', 2)",
    "UPDATE tasks SET status = 'done' WHERE id = 991 AND project_id = 4",
    "SELECT p.name, count(t.id) FROM projects p LEFT JOIN tasks t ON t.project_id = p.id GROUP BY p.name ORDER BY 2 DESC LIMIT 10",
    "BEGIN",
    "COMMIT",
];

fn guard(c: &mut Criterion) {
    use tenantgate::config::GuardConfig;
    use tenantgate::frontend::guard::GuardCache;
    use tenantgate::router::guard::{analyze, check, GuardContext};
    let cfg = GuardConfig::default();
    let cache = GuardCache::default();
    use tenantgate::router::facts::TextFacts;
    for s in MIX {
        let facts = TextFacts::of(s.as_bytes());
        cache.verdict(&cfg, Some("tenant_acme"), s.as_bytes(), &facts);
    }
    c.bench_function(
        "guard: text facts + cached verdict, statement mix (per statement)",
        |bench| {
            let mut i = 0;
            bench.iter(|| {
                i = (i + 1) % MIX.len();
                let sql = black_box(MIX[i].as_bytes());
                cache.verdict(&cfg, Some("tenant_acme"), sql, &TextFacts::of(sql))
            })
        },
    );
    let ctx = GuardContext {
        tenant_schema: Some("tenant_acme"),
        logical_schema: "public",
        strict: false,
    };
    c.bench_function(
        "guard: uncached analyse + check, statement mix (per statement)",
        |bench| {
            let mut i = 0;
            bench.iter(|| {
                i = (i + 1) % MIX.len();
                check(&analyze(black_box(MIX[i])), &ctx)
            })
        },
    );
}

criterion_group!(benches, framing, routing, prepared, guard);
criterion_main!(benches);
