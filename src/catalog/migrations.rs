//! SQL shipped with the binary: master catalog migrations, the tenant template, and the
//! sample data. Tenant migrations can also be read from a directory at run time
//! (`tenantgate migrate --dir`), so new versions roll out without a rebuild.

use std::path::Path;

/// One numbered SQL file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// File stem, e.g. `0001_catalog`; ordered by its number.
    pub version: String,
    pub sql: String,
}

/// Master catalog migrations, in order.
pub fn master() -> Vec<Migration> {
    embedded(&[
        (
            "0001_catalog",
            include_str!("../../migrations/master/0001_catalog.sql"),
        ),
        (
            "0002_service_users",
            include_str!("../../migrations/master/0002_service_users.sql"),
        ),
        (
            "0003_tenant_moves",
            include_str!("../../migrations/master/0003_tenant_moves.sql"),
        ),
    ])
}

/// The tenant template, in order.
pub fn tenant() -> Vec<Migration> {
    embedded(&[(
        "0001_saas_app",
        include_str!("../../migrations/tenant/0001_saas_app.sql"),
    )])
}

/// Sample data for one tenant; `:tenant_users` is the user count.
pub fn sample_data(users: u32) -> String {
    include_str!("../../migrations/sample/sample_data.sql")
        .replace(":tenant_users", &users.to_string())
}

fn embedded(list: &[(&str, &str)]) -> Vec<Migration> {
    list.iter()
        .map(|(v, s)| Migration {
            version: v.to_string(),
            sql: s.to_string(),
        })
        .collect()
}

/// Read `NNNN_*.sql` files from `dir`, ordered by name.
pub fn from_dir(dir: &Path) -> std::io::Result<Vec<Migration>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let numbered = name.len() > 5
            && name.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && name.as_bytes()[4] == b'_';
        if numbered && name.ends_with(".sql") {
            out.push(Migration {
                version: name.trim_end_matches(".sql").to_owned(),
                sql: std::fs::read_to_string(&p)?,
            });
        }
    }
    out.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_lists_match_the_migrations_folders() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        assert_eq!(
            from_dir(&root.join("master")).unwrap(),
            master(),
            "list every master file"
        );
        assert_eq!(
            from_dir(&root.join("tenant")).unwrap(),
            tenant(),
            "list every tenant file"
        );
        assert!(!sample_data(7).contains(":tenant_users"));
    }
}
