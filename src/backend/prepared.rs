//! Statements the proxy has prepared on one server connection, least recently used first out.

use std::collections::HashMap;
use std::sync::Arc;

/// A bounded LRU set of server-side statement names.
#[derive(Debug)]
pub struct PreparedCache {
    map: HashMap<Arc<str>, u64>,
    tick: u64,
    cap: usize,
}

impl PreparedCache {
    pub fn new(cap: usize) -> Self {
        PreparedCache {
            map: HashMap::new(),
            tick: 0,
            cap: cap.max(1),
        }
    }

    /// Is `name` prepared here? Marks it recently used.
    pub fn touch(&mut self, name: &str) -> bool {
        self.tick += 1;
        match self.map.get_mut(name) {
            Some(t) => {
                *t = self.tick;
                true
            }
            None => false,
        }
    }

    /// Record `name` as prepared; returns the evicted name when the cache was full.
    pub fn insert(&mut self, name: Arc<str>) -> Option<Arc<str>> {
        self.tick += 1;
        let mut evicted = None;
        if !self.map.contains_key(&name) && self.map.len() >= self.cap {
            let oldest = self
                .map
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone())
                .expect("cap >= 1");
            self.map.remove(&oldest);
            evicted = Some(oldest);
        }
        self.map.insert(name, self.tick);
        evicted
    }

    pub fn remove(&mut self, name: &str) {
        self.map.remove(name);
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut c = PreparedCache::new(2);
        assert_eq!(c.insert("a".into()), None);
        assert_eq!(c.insert("b".into()), None);
        assert!(c.touch("a"));
        assert_eq!(c.insert("c".into()).as_deref(), Some("b"));
        assert!(c.touch("a") && c.touch("c") && !c.touch("b"));
        c.remove("a");
        assert_eq!(c.len(), 1);
        assert_eq!(c.insert("c".into()), None, "re-insert is not an eviction");
    }
}
