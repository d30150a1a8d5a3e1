//! The tenant directory backed by the master catalog: an in-memory snapshot, reloaded when
//! the catalog announces a change (LISTEN tenantgate_catalog) and every 30 s as a backstop,
//! so every replica sees a change within a second.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::store::{Catalog, CatalogError, Snapshot};
use super::{LoginUser, Tenant, TenantDirectory};
use crate::config::PoolConfig;

/// Called after each reload with the previous and the new snapshot.
pub type OnChange = Arc<dyn Fn(&Snapshot, &Snapshot) + Send + Sync>;

pub struct CatalogDirectory {
    catalog: Catalog,
    pool_cfg: PoolConfig,
    snapshot: ArcSwap<Snapshot>,
}

impl CatalogDirectory {
    /// Load the first snapshot (fails when the catalog is unreachable or not set up).
    pub async fn load(catalog: Catalog, pool_cfg: PoolConfig) -> Result<Arc<Self>, CatalogError> {
        let snap = catalog.snapshot(&pool_cfg).await?;
        info!(tenants = snap.tenants.len(), "tenant catalog loaded");
        Ok(Arc::new(CatalogDirectory {
            catalog,
            pool_cfg,
            snapshot: ArcSwap::from_pointee(snap),
        }))
    }

    /// Reload now.
    pub async fn reload(&self, on_change: Option<&OnChange>) -> Result<(), CatalogError> {
        let new = Arc::new(self.catalog.snapshot(&self.pool_cfg).await?);
        let old = self.snapshot.swap(new.clone());
        if let Some(f) = on_change {
            f(&old, &new);
        }
        Ok(())
    }

    pub fn admin(&self, name: &str) -> Option<Arc<LoginUser>> {
        self.snapshot.load().admins.get(name).cloned()
    }

    /// Follow catalog changes until `stop` is cancelled.
    pub fn watch(
        self: &Arc<Self>,
        on_change: OnChange,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let dir = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = dir.listen_once(&on_change, &stop) => {
                        if let Err(e) = r {
                            warn!(error = %e, "catalog listener failed; retrying");
                        }
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        })
    }

    async fn listen_once(
        &self,
        on_change: &OnChange,
        stop: &CancellationToken,
    ) -> Result<(), CatalogError> {
        let (config, tls) =
            super::conninfo::client_parts(self.catalog.url()).map_err(CatalogError::Invalid)?;
        let (client, mut conn) = config.connect(tls).await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        let driver = tokio::spawn(async move {
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(_)) => {
                        if tx.send(()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        client.batch_execute("LISTEN tenantgate_catalog").await?;
        // Anything that changed while we were not listening.
        self.reload(Some(on_change)).await?;
        let mut backstop = tokio::time::interval(Duration::from_secs(30));
        backstop.tick().await;
        let result = loop {
            tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                n = rx.recv() => {
                    if n.is_none() {
                        break Err(CatalogError::Pool("catalog notification connection closed".into()));
                    }
                    // Coalesce a burst of notifications into one reload.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    while rx.try_recv().is_ok() {}
                    self.reload(Some(on_change)).await?;
                }
                _ = backstop.tick() => self.reload(Some(on_change)).await?,
            }
        };
        driver.abort();
        result
    }
}

impl TenantDirectory for CatalogDirectory {
    fn tenant(&self, key: &str) -> Option<Arc<Tenant>> {
        self.snapshot.load().tenants.get(key).cloned()
    }

    fn login(&self, tenant: &str, user: &str) -> Option<Arc<LoginUser>> {
        self.snapshot.load().users.get(tenant, user)
    }

    fn tenants(&self) -> Vec<Arc<Tenant>> {
        self.snapshot.load().tenants.values().cloned().collect()
    }

    fn service_user(&self, name: &str) -> Option<Arc<LoginUser>> {
        self.snapshot.load().services.get(name).cloned()
    }
    fn admin_user(&self, name: &str) -> Option<Arc<LoginUser>> {
        self.admin(name)
    }
}
