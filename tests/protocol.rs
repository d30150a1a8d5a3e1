//! Protocol fidelity through the proxy: extended query, prepared statements in transaction
//! pooling, pipelining, COPY, large results, errors in transactions, notices, LISTEN/NOTIFY
//! and cancel.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{code, tenant_pool, Env};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tenantgate::config::PoolMode;
use tokio_postgres::{AsyncMessage, NoTls};

#[tokio::test]
async fn prepared_statements_survive_server_switches_in_transaction_pooling() {
    // One server connection, several clients: every client's statements must be
    // (re)prepared on whatever connection it gets.
    let env = Env::with(|c| tenant_pool(c, "acme", PoolMode::Transaction, 1)).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(env.client("acme").await);
    }
    let mut stmts = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        // different text per client, plus one shared text
        let own = c
            .prepare(&format!(
                "SELECT id, owner, {i}::int AS k FROM items WHERE id = $1"
            ))
            .await
            .unwrap();
        let shared = c
            .prepare("SELECT count(*) FROM items WHERE id <= $1")
            .await
            .unwrap();
        stmts.push((own, shared));
    }
    for round in 0..5 {
        for (i, c) in clients.iter().enumerate() {
            let (own, shared) = &stmts[i];
            let r = c.query_one(own, &[&((round % 10) + 1)]).await.unwrap();
            assert_eq!(r.get::<_, i32>(2), i as i32);
            let n: i64 = c.query_one(shared, &[&5i32]).await.unwrap().get(0);
            assert_eq!(n, 5);
        }
    }
    // a statement that fails to prepare leaves no trace
    let e = clients[0].prepare("SELEC nonsense").await.unwrap_err();
    assert_eq!(code(&e), "42601");
    clients[0].query_one(&stmts[0].1, &[&1i32]).await.unwrap();
    env.finish().await;
}

#[tokio::test]
async fn pipelined_queries_keep_order() {
    let env = Env::new().await;
    let c = env.client("globex").await;
    let stmt = c.prepare("SELECT $1::int + 0").await.unwrap();
    let values: Vec<i32> = (0..200).collect();
    let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> =
        values.iter().map(|v| [v as _]).collect();
    let futs: Vec<_> = params.iter().map(|p| c.query_one(&stmt, p)).collect();
    let rows = futures_util::future::join_all(futs).await;
    for (i, r) in rows.into_iter().enumerate() {
        assert_eq!(r.unwrap().get::<_, i32>(0), i as i32);
    }
    // pipelined with an error in the middle: the others still answer
    let bad = c.prepare("SELECT 1 / $1::int").await.unwrap();
    let zero = 0i32;
    let one = 1i32;
    let (p1, p0): (
        [&(dyn tokio_postgres::types::ToSql + Sync); 1],
        [&(dyn tokio_postgres::types::ToSql + Sync); 1],
    ) = ([&one], [&zero]);
    let (a, b, d) = tokio::join!(
        c.query_one(&bad, &p1),
        c.query_one(&bad, &p0),
        c.query_one(&bad, &p1)
    );
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_eq!(code(&b.unwrap_err()), "22012");
    assert_eq!(d.unwrap().get::<_, i32>(0), 1);
    env.finish().await;
}

#[tokio::test]
async fn copy_in_and_out() {
    let env = Env::new().await;
    let c = env.client("acme").await;
    c.batch_execute("CREATE TABLE copied (id int, body text)")
        .await
        .unwrap();
    let sink = c.copy_in("COPY copied FROM STDIN").await.unwrap();
    let mut sink = std::pin::pin!(sink);
    let mut chunk = String::new();
    for i in 0..50_000 {
        chunk.push_str(&format!("{i}\trow number {i}\n"));
        if chunk.len() > 64 * 1024 {
            sink.send(Bytes::from(std::mem::take(&mut chunk)))
                .await
                .unwrap();
        }
    }
    sink.send(Bytes::from(chunk)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 50_000);
    let stream = c.copy_out("COPY copied TO STDOUT").await.unwrap();
    let data: Vec<Bytes> = stream.try_collect().await.unwrap();
    let total: usize = data.iter().map(|b| b.len()).sum();
    let lines = data
        .iter()
        .flat_map(|b| b.iter())
        .filter(|&&b| b == b'\n')
        .count();
    assert_eq!(lines, 50_000);
    assert!(total > 1_000_000);
    // a failed COPY leaves the connection usable
    let sink = c.copy_in("COPY copied FROM STDIN").await.unwrap();
    let mut sink = std::pin::pin!(sink);
    sink.send(Bytes::from_static(b"not-a-number\tx\n"))
        .await
        .unwrap();
    assert_eq!(code(&sink.finish().await.unwrap_err()), "22P02");
    assert_eq!(
        c.query_one("SELECT count(*) FROM copied", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        50_000
    );
    env.finish().await;
}

#[tokio::test]
async fn large_results_stream_and_errors_inside_transactions() {
    let env = Env::new().await;
    let mut c = env.client("acme").await;
    let rows = c
        .query(
            "SELECT g, repeat('x', 200) FROM generate_series(1, 100000) g",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 100_000);
    assert_eq!(rows[99_999].get::<_, i32>(0), 100_000);
    let tx = c.transaction().await.unwrap();
    tx.execute("INSERT INTO items VALUES (100, 'acme')", &[])
        .await
        .unwrap();
    let e = tx
        .execute("INSERT INTO items VALUES (100, 'acme')", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&e), "23505");
    let e = tx.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(code(&e), "25P02", "transaction is aborted");
    tx.rollback().await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM items WHERE id = 100", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    env.finish().await;
}

#[tokio::test]
async fn notices_and_listen_notify_in_session_mode() {
    let env = Env::with(|c| tenant_pool(c, "globex", PoolMode::Session, 2)).await;
    let (client, mut conn) = tokio_postgres::connect(&env.dsn("app@globex", "globex-pw"), NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        while let Some(m) = stream.next().await {
            if tx.send(m.unwrap()).is_err() {
                break;
            }
        }
    });
    client
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello %', 42; END $$")
        .await
        .unwrap();
    client.batch_execute("LISTEN chan").await.unwrap();
    client
        .batch_execute("NOTIFY chan, 'payload'")
        .await
        .unwrap();
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let mut got_notice = false;
    let mut got_notify = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while (!got_notice || got_notify.is_none()) && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some(AsyncMessage::Notice(n))) => got_notice |= n.message() == "hello 42",
            Ok(Some(AsyncMessage::Notification(n))) => {
                got_notify = Some((
                    n.channel().to_owned(),
                    n.payload().to_owned(),
                    n.process_id(),
                ))
            }
            _ => {}
        }
    }
    assert!(got_notice, "notice forwarded");
    let (ch, payload, npid) = got_notify.expect("notification forwarded");
    assert_eq!((ch.as_str(), payload.as_str()), ("chan", "payload"));
    assert_eq!(
        npid, pid,
        "notification pid is the real backend pid in session pooling"
    );
    env.finish().await;
}

async fn cancel_running_query(mode: PoolMode) {
    let env = Env::with(|c| tenant_pool(c, "acme", mode, 4)).await;
    let a = env.client("acme").await;
    let b = env.client("acme").await;
    let token = a.cancel_token();
    let slow_a = tokio::spawn(async move { a.query("SELECT pg_sleep(10)", &[]).await });
    let slow_b =
        tokio::spawn(async move { b.query_one("SELECT pg_sleep(1.5), 'b'::text", &[]).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = std::time::Instant::now();
    token.cancel_query(NoTls).await.unwrap();
    let e = slow_a.await.unwrap().unwrap_err();
    assert_eq!(code(&e), "57014", "query canceled");
    assert!(started.elapsed() < Duration::from_secs(5));
    // the other client's query was not cancelled
    let r = slow_b.await.unwrap().unwrap();
    assert_eq!(r.get::<_, String>(1), "b");
    env.finish().await;
}

#[tokio::test]
async fn cancel_reaches_the_right_backend_in_transaction_mode() {
    cancel_running_query(PoolMode::Transaction).await;
}

#[tokio::test]
async fn cancel_reaches_the_right_backend_in_session_mode() {
    cancel_running_query(PoolMode::Session).await;
}
