//! Cancel keys: the BackendKeyData the proxy hands each client, mapped to whatever server
//! connection that client is using right now.

use std::sync::Arc;

use foldhash::HashMap;
use parking_lot::Mutex;
use rand::Rng;

/// The server connection a client is currently attached to.
pub type ServerKey = crate::backend::server::CancelKey;

/// One client's cancel target; updated on every attach and release.
#[derive(Default)]
pub struct CancelTarget {
    server: Mutex<Option<ServerKey>>,
}

impl CancelTarget {
    #[inline]
    pub fn set(&self, key: Option<ServerKey>) {
        *self.server.lock() = key;
    }

    pub fn get(&self) -> Option<ServerKey> {
        self.server.lock().clone()
    }
}

/// All live clients' cancel keys.
#[derive(Default)]
pub struct CancelRegistry {
    map: Mutex<HashMap<(i32, i32), Arc<CancelTarget>>>,
}

impl CancelRegistry {
    /// Register a client. `pid` is the real server pid in session pooling, else `None`
    /// and a proxy pid above the range Linux uses for processes is drawn.
    pub fn register(&self, pid: Option<i32>) -> ((i32, i32), Arc<CancelTarget>) {
        let target = Arc::new(CancelTarget::default());
        let mut rng = rand::thread_rng();
        let mut map = self.map.lock();
        loop {
            let key = (
                pid.unwrap_or_else(|| rng.gen_range(1 << 23..i32::MAX)),
                rng.gen::<i32>(),
            );
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry(key) {
                e.insert(target.clone());
                return (key, target);
            }
        }
    }

    pub fn unregister(&self, key: (i32, i32)) {
        self.map.lock().remove(&key);
    }

    /// The server to cancel for a client key, if that client is attached to one.
    pub fn lookup(&self, key: (i32, i32)) -> Option<ServerKey> {
        self.map.lock().get(&key).and_then(|t| t.get())
    }

    /// Is this key one of this replica's clients?
    pub fn contains(&self, key: (i32, i32)) -> bool {
        self.map.lock().contains_key(&key)
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_current_server_only() {
        let r = CancelRegistry::default();
        let (k1, t1) = r.register(None);
        let (k2, _t2) = r.register(Some(42));
        assert_eq!(k2.0, 42);
        assert!(k1.0 >= 1 << 23);
        let addr = crate::backend::server::ServerAddr::Tcp("127.0.0.1:5432".parse().unwrap());
        let key = ServerKey {
            addr: addr.clone(),
            pid: 7,
            secret: 8,
            tls: None,
        };
        assert!(r.lookup(k1).is_none());
        t1.set(Some(key));
        let found = r.lookup(k1).unwrap();
        assert_eq!((&found.addr, found.pid, found.secret), (&addr, 7, 8));
        assert!(r.lookup(k2).is_none());
        assert!(
            r.lookup((k1.0, k1.1.wrapping_add(1))).is_none(),
            "secret must match"
        );
        r.unregister(k1);
        assert!(r.lookup(k1).is_none());
    }
}
