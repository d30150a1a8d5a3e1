//! The settings a client asked for (startup parameters and `options`, lower-case names),
//! named by an id that every client asking for the same list shares. A server connection
//! remembers the id of the list it was last brought in line with, so the check at each
//! checkout compares two integers instead of every name and value of two lists (which
//! sit in cold memory by then: callgrind counted 3.6 first-level cache misses per
//! transaction in that comparison at 32 clients).

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;

/// Distinct lists remembered at most; beyond that the table starts over. Ids are never
/// reused, so a list seen again after that gets a new id, and a connection synced under
/// the old one compares the values once more (and sends nothing when they match).
const INTERNED_MAX: usize = 4096;

type List = Arc<[(String, String)]>;

/// Lists seen, by content, each with its id; at most `max` of them.
struct Interned {
    lists: HashMap<List, u64, foldhash::fast::RandomState>,
    max: usize,
}

impl Interned {
    fn new(max: usize) -> Self {
        Interned {
            lists: HashMap::default(),
            max,
        }
    }

    /// The id and shared copy of `list`: the ones given to an equal list before, else new.
    fn intern(&mut self, list: Vec<(String, String)>) -> (u64, List) {
        if let Some((list, &id)) = self.lists.get_key_value(list.as_slice()) {
            return (id, list.clone());
        }
        if self.lists.len() >= self.max {
            self.lists.clear();
        }
        let list: List = list.into();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        self.lists.insert(list.clone(), id);
        (id, list)
    }
}

static INTERNED: LazyLock<Mutex<Interned>> =
    LazyLock::new(|| Mutex::new(Interned::new(INTERNED_MAX)));
/// Ids of all tables (never reused, so no two lists ever had the same one).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A client's settings. Two with the same non-zero id are the same list.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// 0 for a list of its own ([`ClientSettings::unnamed`]).
    id: u64,
    list: List,
}

impl ClientSettings {
    /// The list under the id of every equal list seen before (once per login).
    pub fn new(list: Vec<(String, String)>) -> Self {
        let (id, list) = INTERNED.lock().intern(list);
        ClientSettings { id, list }
    }

    /// A list made for one checkout (a tenant's flag settings merged in): never taken
    /// as the list a connection was last synced with.
    pub fn unnamed(list: Vec<(String, String)>) -> Self {
        ClientSettings {
            id: 0,
            list: list.into(),
        }
    }

    /// The list with `name` set to `value` (added if missing), under its own id.
    pub fn set(&mut self, name: &str, value: &str) {
        let mut list = self.list.to_vec();
        match list.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) if v == value => return,
            Some((_, v)) => *v = value.to_owned(),
            None => list.push((name.to_owned(), value.to_owned())),
        }
        *self = ClientSettings::new(list);
    }

    /// The id shared by equal lists; 0 for an unnamed one.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Deref for ClientSettings {
    type Target = [(String, String)];

    fn deref(&self) -> &Self::Target {
        &self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equal_lists_share_an_id_and_others_do_not() {
        let a = ClientSettings::new(list(&[("application_name", "settings-test-a")]));
        let b = ClientSettings::new(list(&[("application_name", "settings-test-a")]));
        let c = ClientSettings::new(list(&[("application_name", "settings-test-c")]));
        let d = ClientSettings::new(list(&[
            ("application_name", "settings-test-a"),
            ("timezone", "UTC"),
        ]));
        assert_ne!(a.id(), 0);
        assert_eq!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert_ne!(a.id(), d.id());
        assert_eq!(&*b, &list(&[("application_name", "settings-test-a")])[..]);
    }

    #[test]
    fn a_changed_setting_takes_the_id_of_its_new_list() {
        let mut a = ClientSettings::new(list(&[("application_name", "settings-test-set")]));
        let before = a.id();
        a.set("application_name", "settings-test-set");
        assert_eq!(a.id(), before, "unchanged");
        a.set("timezone", "UTC");
        let b = ClientSettings::new(list(&[
            ("application_name", "settings-test-set"),
            ("timezone", "UTC"),
        ]));
        assert_eq!(a.id(), b.id());
        a.set("timezone", "Europe/Paris");
        assert_ne!(a.id(), b.id());
        assert_eq!(a[1], ("timezone".to_string(), "Europe/Paris".to_string()));
    }

    #[test]
    fn unnamed_lists_match_nothing() {
        let u = ClientSettings::unnamed(list(&[("timezone", "UTC")]));
        assert_eq!(u.id(), 0);
        assert_eq!(u.len(), 1);
    }

    #[test]
    fn a_full_table_starts_over_with_fresh_ids() {
        // A table of its own: clearing the process's table here would race the other
        // tests, which intern the same list twice.
        let mut t = Interned::new(4);
        let (first, _) = t.intern(list(&[("application_name", "x")]));
        assert_eq!(t.intern(list(&[("application_name", "x")])).0, first);
        for i in 0..4 {
            t.intern(list(&[("application_name", &format!("fill-{i}"))]));
        }
        // Forgotten when the table filled: seen anew, under an id no list had before.
        let (again, shared) = t.intern(list(&[("application_name", "x")]));
        assert!(again > first, "{again} after {first}");
        assert_eq!(&*shared, &list(&[("application_name", "x")])[..]);
    }
}
