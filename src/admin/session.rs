//! One admin client: the simple and extended query protocols over admin commands. Text is
//! resolved to a [`Command`] (SQL-style first, then English; either may be wrapped in a SQL
//! comment), run, and answered with RowDescription/DataRow/CommandComplete; progress
//! notices stream while a command runs.

use bytes::BytesMut;
use std::collections::HashMap;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info};

use super::command::{self, Command, SYNOPSIS};
use super::english::{self, Vocab};
use super::exec::{self, Ctx};
use crate::frontend::stream::{read_message, ClientStream};
use crate::protocol::{frame, write, PgError};
use crate::state::Proxy;

const MAX_MESSAGE: usize = 1 << 20;

/// What a text asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Run {
        cmd: Command,
        english: bool,
    },
    /// A destructive command asked in English: shown, not run.
    Refer(Command),
    /// `SET ...` and other session noise drivers send: acknowledged.
    Ignore(String),
    Empty,
    Unknown(Vec<String>),
}

impl Plan {
    fn columns(&self) -> &'static [&'static str] {
        match self {
            Plan::Run { cmd, .. } => exec::columns(cmd),
            Plan::Refer(_) => &["command_to_run"],
            _ => &[],
        }
    }
}

/// The command inside `/* admin: ... */` or `-- ...`, or the text itself.
pub fn unwrap_comment(text: &str) -> String {
    let t = text.trim().trim_end_matches(';').trim();
    let inner = if let Some(body) = t.strip_prefix("/*").and_then(|b| b.strip_suffix("*/")) {
        body.trim().to_owned()
    } else if t.starts_with("--") {
        t.lines()
            .map(|l| l.trim().trim_start_matches("--").trim())
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        return t.to_owned();
    };
    let lower = inner.to_ascii_lowercase();
    match lower.strip_prefix("admin:") {
        Some(_) => inner[6..].trim().to_owned(),
        None => inner,
    }
}

/// Resolve admin text against the vocabulary. Pure.
pub fn resolve(text: &str, vocab: &Vocab) -> Plan {
    let t = unwrap_comment(text);
    if t.is_empty() {
        return Plan::Empty;
    }
    if let Some(cmd) = command::parse(&t) {
        return Plan::Run {
            cmd,
            english: false,
        };
    }
    let first = t
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    if matches!(
        first.as_str(),
        "SET" | "RESET" | "DISCARD" | "BEGIN" | "COMMIT" | "ROLLBACK"
    ) && !t.to_ascii_uppercase().starts_with("SET FLAG")
    {
        return Plan::Ignore(first);
    }
    match english::parse(&t, vocab) {
        Some(cmd) if cmd.destructive() => Plan::Refer(cmd),
        Some(cmd) => Plan::Run { cmd, english: true },
        None => Plan::Unknown(suggest(&t)),
    }
}

/// The commands sharing the most words with `text`.
fn suggest(text: &str) -> Vec<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 2)
        .map(str::to_ascii_uppercase)
        .collect();
    let mut scored: Vec<(usize, &str)> = SYNOPSIS
        .iter()
        .map(|s| {
            let n = s
                .split(' ')
                .filter(|w| {
                    words
                        .iter()
                        .any(|x| x == w || (x.len() > 3 && w.starts_with(x.as_str())))
                })
                .count();
            (n, *s)
        })
        .filter(|(n, _)| *n > 0)
        .collect();
    scored.sort_by_key(|b| std::cmp::Reverse(b.0));
    let mut out: Vec<String> = scored
        .into_iter()
        .take(3)
        .map(|(_, s)| s.to_owned())
        .collect();
    if out.is_empty() {
        out = vec![
            "SHOW TENANTS".into(),
            "SHOW USAGE".into(),
            "SHOW LIMITS".into(),
        ];
    }
    out
}

/// Tenant names, plans and instances for the English parser.
pub async fn vocab(proxy: &Proxy) -> Vocab {
    let mut v = Vocab::default();
    match proxy.catalog() {
        Some(c) => {
            if let Ok(ts) = c.list_tenants().await {
                v.tenants = ts.into_iter().map(|t| (t.key, t.display_name)).collect();
            }
            if let Ok(conn) = c.pool().get().await {
                if let Ok(rows) = conn
                    .query("SELECT key, aliases FROM tenantgate.plans", &[])
                    .await
                {
                    v.plans = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
                }
                if let Ok(rows) = conn
                    .query("SELECT name FROM tenantgate.instances", &[])
                    .await
                {
                    v.instances = rows.iter().map(|r| r.get(0)).collect();
                }
            }
        }
        None => {
            for t in proxy.directory().tenants() {
                v.tenants.push((t.key.clone(), t.key.clone()));
                if !v.plans.iter().any(|(p, _)| *p == t.plan) {
                    v.plans.push((t.plan.clone(), Vec::new()));
                }
                if !v.instances.contains(&t.placement.instance) {
                    v.instances.push(t.placement.instance.clone());
                }
            }
        }
    }
    v
}

/// Serve an authenticated admin client (AuthenticationOk already in `out`).
pub async fn serve<S: ClientStream>(
    proxy: Proxy,
    mut stream: S,
    mut cin: BytesMut,
    mut out: BytesMut,
    user: String,
) {
    info!(%user, "admin session");
    for (k, v) in [
        ("server_version", "16.0 (tenantgate admin)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        write::parameter_status(&mut out, k, v);
    }
    write::backend_key_data(&mut out, rand::random::<i32>().abs(), rand::random());
    write::ready_for_query(&mut out, b'I');
    let mut stmts: HashMap<Vec<u8>, String> = HashMap::new();
    let mut portals: HashMap<Vec<u8>, String> = HashMap::new();
    let mut skip = false;
    loop {
        if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
            return;
        }
        out.clear();
        let (tag, body) = match read_message(&mut stream, &mut cin, MAX_MESSAGE).await {
            Ok(m) => m,
            Err(_) => return,
        };
        if skip && tag != b'S' && tag != b'X' {
            continue;
        }
        let result = match tag {
            b'X' => return,
            b'Q' => {
                let text = String::from_utf8_lossy(frame::parse_query(&body).unwrap_or(&body))
                    .into_owned();
                let plan = resolve(&text, &vocab(&proxy).await);
                if let Err(e) = answer(&proxy, &user, &plan, true, &mut stream, &mut out).await {
                    e.encode(&mut out);
                }
                write::ready_for_query(&mut out, b'I');
                Ok(())
            }
            b'P' => match frame::parse_parse(&body) {
                Some(m) => {
                    stmts.insert(
                        m.name.to_vec(),
                        String::from_utf8_lossy(m.query).into_owned(),
                    );
                    write::empty(&mut out, b'1');
                    Ok(())
                }
                None => Err(PgError::protocol_violation("malformed Parse message")),
            },
            b'B' => match frame::parse_bind(&body) {
                Some((portal, stmt, _)) => match stmts.get(stmt) {
                    Some(text) => {
                        portals.insert(portal.to_vec(), text.clone());
                        write::empty(&mut out, b'2');
                        Ok(())
                    }
                    None => Err(PgError::admin_failed(
                        "26000",
                        "prepared statement does not exist",
                    )),
                },
                None => Err(PgError::protocol_violation("malformed Bind message")),
            },
            b'D' => match frame::parse_target(&body) {
                Some((kind, name)) => {
                    let text = if kind == b'S' {
                        stmts.get(name)
                    } else {
                        portals.get(name)
                    };
                    match text {
                        Some(text) => {
                            if kind == b'S' {
                                write::no_parameters(&mut out);
                            }
                            let cols = resolve(text, &vocab(&proxy).await).columns();
                            if cols.is_empty() {
                                write::empty(&mut out, b'n');
                            } else {
                                write::row_description(&mut out, cols);
                            }
                            Ok(())
                        }
                        None => Err(PgError::admin_failed(
                            "26000",
                            "no such statement or portal",
                        )),
                    }
                }
                None => Err(PgError::protocol_violation("malformed Describe message")),
            },
            b'E' => {
                let portal = frame::cstr(&body).map_or(&b""[..], |(p, _)| p);
                match portals.get(portal).cloned() {
                    Some(text) => {
                        let plan = resolve(&text, &vocab(&proxy).await);
                        answer(&proxy, &user, &plan, false, &mut stream, &mut out).await
                    }
                    None => Err(PgError::admin_failed("34000", "portal does not exist")),
                }
            }
            b'C' => {
                if let Some((kind, name)) = frame::parse_target(&body) {
                    if kind == b'S' {
                        stmts.remove(name);
                    } else {
                        portals.remove(name);
                    }
                }
                write::empty(&mut out, b'3');
                Ok(())
            }
            b'S' => {
                skip = false;
                write::ready_for_query(&mut out, b'I');
                Ok(())
            }
            b'H' => Ok(()),
            _ => Err(PgError::protocol_violation(format!(
                "unexpected message {:?} in the admin database",
                tag as char
            ))),
        };
        if let Err(e) = result {
            let fatal = e.is_fatal();
            e.encode(&mut out);
            if fatal {
                let _ = stream.write_all(&out).await;
                return;
            }
            skip = tag != b'Q';
        }
    }
}

/// Run a plan and write its answer (RowDescription only for the simple protocol).
async fn answer<S: ClientStream>(
    proxy: &Proxy,
    user: &str,
    plan: &Plan,
    describe: bool,
    stream: &mut S,
    out: &mut BytesMut,
) -> Result<(), PgError> {
    let cmd = match plan {
        Plan::Empty => {
            write::empty(out, b'I');
            return Ok(());
        }
        Plan::Ignore(tag) => {
            write::command_complete(out, tag);
            return Ok(());
        }
        Plan::Unknown(s) => return Err(PgError::admin_unknown(s)),
        Plan::Refer(cmd) => {
            write::notice(
                out,
                &format!("Not run: \"{cmd}\" changes or ends things, so it is never run from English. Run the command itself to do it."),
            );
            if describe {
                write::row_description(out, plan.columns());
            }
            write::data_row(out, &[Some(cmd.to_string())]);
            write::command_complete(out, "SHOW 1");
            return Ok(());
        }
        Plan::Run { cmd, english } => {
            if *english {
                write::notice(out, &format!("Understood as: {cmd}"));
            }
            cmd
        }
    };
    debug!(%cmd, "admin command");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Ctx {
        proxy,
        actor: user,
        notices: tx,
    };
    let run = exec::run(cmd, &ctx);
    tokio::pin!(run);
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            Some(n) = rx.recv() => {
                // Progress reaches the client while the command runs.
                write::notice(out, &n);
                if stream.write_all(out).await.is_ok() {
                    let _ = stream.flush().await;
                }
                out.clear();
            }
        }
    };
    while let Ok(n) = rx.try_recv() {
        write::notice(out, &n);
    }
    let ans = result?;
    let cols = exec::columns(cmd);
    if describe && !cols.is_empty() {
        write::row_description(out, cols);
    }
    for row in &ans.rows {
        write::data_row(out, row);
    }
    write::command_complete(out, &ans.tag);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_plans() {
        assert_eq!(unwrap_comment("/* admin: show tenants */"), "show tenants");
        assert_eq!(
            unwrap_comment("-- which tenants are approaching their plan limits?"),
            "which tenants are approaching their plan limits?"
        );
        assert_eq!(unwrap_comment("  SHOW TENANTS; "), "SHOW TENANTS");
        let v = Vocab {
            tenants: vec![("acme".into(), "Acme Corp".into())],
            plans: vec![("pro".into(), vec!["premium".into()])],
            instances: vec![],
        };
        assert_eq!(
            resolve("/* admin: show tenants */", &v),
            Plan::Run {
                cmd: Command::ShowTenants,
                english: false
            }
        );
        assert!(matches!(
            resolve("-- which tenants are approaching their plan limits?", &v),
            Plan::Run {
                cmd: Command::ShowLimits,
                english: true
            }
        ));
        assert!(matches!(
            resolve("please delete tenant acme", &v),
            Plan::Refer(Command::DropTenant { .. })
        ));
        assert!(matches!(
            resolve("SET extra_float_digits = 3", &v),
            Plan::Ignore(_)
        ));
        assert!(matches!(resolve("", &v), Plan::Empty));
        match resolve("show tenantz pls", &v) {
            Plan::Unknown(s) => assert!(s.iter().any(|c| c.starts_with("SHOW")), "{s:?}"),
            other => panic!("{other:?}"),
        }
    }
}
