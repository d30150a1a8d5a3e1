//! `tenantgate demo`: the README walkthrough against a running proxy with the sample
//! tenants. Each step prints what it sends and the answer, as an operator would see it in
//! psql. Only the admin database and ordinary tenant logins are used: nothing here has
//! powers a user of the proxy would not have.

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

async fn connect(proxy: &str, user: &str, password: &str, db: &str) -> anyhow::Result<Client> {
    let (host, port) = proxy.rsplit_once(':').context("--proxy is host:port")?;
    let dsn = format!(
        "host={host} port={port} user={user} password={password} dbname={db} connect_timeout=10"
    );
    let (c, conn) = tokio_postgres::connect(&dsn, NoTls)
        .await
        .with_context(|| format!("connecting as {user} to {proxy}/{db}"))?;
    tokio::spawn(conn);
    Ok(c)
}

/// Print a result set as an aligned table.
fn print_table(msgs: &[SimpleQueryMessage]) {
    let mut header: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(cols) if header.is_empty() => {
                header = cols.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(r) => {
                if header.is_empty() {
                    header = r.columns().iter().map(|c| c.name().to_owned()).collect();
                }
                rows.push(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("").to_owned())
                        .collect(),
                );
            }
            SimpleQueryMessage::CommandComplete(_) if rows.is_empty() && header.is_empty() => {
                println!("  (done)");
            }
            _ => {}
        }
    }
    if header.is_empty() {
        return;
    }
    let width: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count().min(60))
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{:<w$}", c.chars().take(60).collect::<String>(), w = w))
            .collect();
        println!("  {}", parts.join(" | "));
    };
    line(&header);
    println!(
        "  {}",
        width
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-")
    );
    for r in &rows {
        line(r);
    }
    println!(
        "  ({} row{})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    );
}

async fn step(admin: &Client, title: &str, text: &str) {
    println!("\n== {title}\nadmin=> {text}");
    match admin.simple_query(text).await {
        Ok(msgs) => print_table(&msgs),
        Err(e) => match e.as_db_error() {
            Some(db) => println!("  ERROR {}: {}", db.code().code(), db.message()),
            None => println!("  ERROR {e}"),
        },
    }
}

/// Run the walkthrough.
pub async fn run(
    proxy: &str,
    admin_user: &str,
    admin_password: &str,
    db: &str,
) -> anyhow::Result<()> {
    let admin = connect(proxy, admin_user, admin_password, "admin").await?;
    // The admin database's notices ("Understood as: ...") are printed by the connection
    // task only through its log; show the equivalent command from our side instead.
    println!("tenantgate demo against {proxy} (admin database as {admin_user})");

    step(&admin, "1. The tenants", "SHOW TENANTS").await;
    let demo_key = format!("demo_{}", std::process::id());
    step(
        &admin,
        "2. Provision a tenant (in plain English)",
        &format!("Create a new tenant called '{demo_key}' with premium plan"),
    )
    .await;

    println!("\n== 3. Per-tenant queries: the same SQL sees only each tenant's rows");
    for key in ["acme", "techco", "startup"] {
        let c = connect(
            proxy,
            &format!("app@{key}"),
            &format!("{key}-app-password"),
            db,
        )
        .await?;
        let mut limited = false;
        for _ in 0..20 {
            match c
                .simple_query("SELECT count(*) FROM tasks WHERE status <> 'done'")
                .await
            {
                Ok(_) => {}
                Err(e) if e.code().is_some_and(|c| c.code() == "53400") => {
                    if !limited {
                        let m = e
                            .as_db_error()
                            .map(|d| d.message().to_owned())
                            .unwrap_or_default();
                        println!("  app@{key}: {m} -> 53400, the connection stays usable; pacing");
                        limited = true;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = c.simple_query("SELECT count(*) FROM users").await?;
        let users = n.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        });
        println!(
            "  app@{key}: SELECT count(*) FROM users -> {}",
            users.unwrap_or_default()
        );
        // One deliberately slow statement per tenant for the slow-query report.
        tokio::time::sleep(Duration::from_millis(250)).await;
        c.simple_query("SELECT pg_sleep(0.05), count(*) FROM tasks")
            .await?;
    }
    // Telemetry writes in the background; give it a moment.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    step(
        &admin,
        "4. Usage and cost per tenant",
        "Show me all tenants and their resource usage",
    )
    .await;
    step(
        &admin,
        "5. Response time of one tenant",
        "What's the average response time for tenant 'TechCo' queries?",
    )
    .await;
    step(
        &admin,
        "6. Slow queries of one tenant",
        "Find slow queries specific to tenant 'StartUp'",
    )
    .await;
    step(
        &admin,
        "7. Monthly active users across tenants",
        "Compare monthly active users across all tenants",
    )
    .await;
    step(
        &admin,
        "8. Tenants near their plan limits",
        "Which tenants are approaching their plan limits?",
    )
    .await;
    step(
        &admin,
        "9. Revenue by plan",
        "Show revenue by tenant tier (free, pro, enterprise)",
    )
    .await;
    step(
        &admin,
        "10. Users of a tenant",
        "/* admin: show users for tenant acme */",
    )
    .await;
    step(
        &admin,
        "11. Moving a tenant to a dedicated instance",
        "Migrate tenant 'Acme' to a dedicated database instance",
    )
    .await;
    step(
        &admin,
        "12. Destructive requests are shown, never run",
        &format!("Please delete the tenant {demo_key}"),
    )
    .await;
    println!("\nThe demo tenant {demo_key} is left in place; remove it with:\n  tenantgate --config config/demo.toml tenant drop {demo_key} --force");
    Ok(())
}
