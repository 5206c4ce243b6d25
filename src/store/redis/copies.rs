//! Node-local copies of records: the last version of each record this node
//! inserted, wrote, read, or was sent in a write's announcement. They serve
//! [`RecordStore::get_recent`](crate::store::RecordStore::get_recent) only,
//! whose callers either ask for a version they were told of (a woken
//! receiver: the copy is then exactly what a read would have answered when
//! the write was announced) or start a compare-and-set from it and re-check
//! every refusal on a fresh read. Nothing answers from a copy unchecked.
//!
//! Each copy saves a round trip to Redis: the browser socket's read after
//! its session was created on this node, the phone's completion after its
//! claim here, and every woken socket's re-read (the announcement carries
//! the record). Memory is bounded: copies live in two generations of at most
//! [`GENERATION`] records each; the older one is dropped when the newer one
//! fills up or gets [`GENERATION_AGE`] old, so an idle node keeps nothing
//! for long.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Records per generation: two generations of sessions of a few KiB each
/// stay within some tens of MiB.
const GENERATION: usize = 4096;
/// Age at which the current generation becomes the old one.
const GENERATION_AGE: Duration = Duration::from_secs(60);

#[derive(Clone)]
enum Copy {
    /// As written or read here.
    Value(Arc<dyn Any + Send + Sync>),
    /// As announced by another node: parsed when first asked for.
    Json(Arc<str>),
}

struct Generations {
    current: HashMap<String, (u64, Copy)>,
    previous: HashMap<String, (u64, Copy)>,
    started: Instant,
}

pub(super) struct Copies {
    inner: Mutex<Generations>,
}

impl Copies {
    pub(super) fn new() -> Self {
        Self {
            inner: Mutex::new(Generations {
                current: HashMap::new(),
                previous: HashMap::new(),
                started: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Generations> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `record` (at `rev`) under `key`, unless a later version is kept.
    pub(super) fn keep<R: Clone + Send + Sync + 'static>(&self, key: &str, rev: u64, record: &R) {
        self.put(key, rev, Copy::Value(Arc::new(record.clone())));
    }

    /// Keeps an announced record's JSON (at `rev`), unless a later version is kept.
    pub(super) fn keep_json(&self, key: &str, rev: u64, json: &str) {
        self.put(key, rev, Copy::Json(Arc::from(json)));
    }

    fn put(&self, key: &str, rev: u64, copy: Copy) {
        let mut g = self.lock();
        let kept = g
            .current
            .get(key)
            .or_else(|| g.previous.get(key))
            .map(|(r, _)| *r);
        if kept.is_some_and(|r| r > rev) {
            return;
        }
        if g.current.len() >= GENERATION || g.started.elapsed() >= GENERATION_AGE {
            g.previous = std::mem::take(&mut g.current);
            g.started = Instant::now();
        }
        g.previous.remove(key);
        g.current.insert(key.to_owned(), (rev, copy));
    }

    /// The copy under `key` if it has reached `at_least`.
    pub(super) fn get<R>(&self, key: &str, at_least: u64) -> Option<R>
    where
        R: Clone + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        let (rev, copy) = {
            let g = self.lock();
            g.current
                .get(key)
                .or_else(|| g.previous.get(key))
                .cloned()?
        };
        if rev < at_least {
            return None;
        }
        match copy {
            Copy::Value(v) => v.downcast_ref::<R>().cloned(),
            Copy::Json(json) => {
                // A copy that does not parse is simply not used: the caller reads.
                let record: R = serde_json::from_str(&json).ok()?;
                self.keep(key, rev, &record);
                Some(record)
            }
        }
    }

    /// Forgets the copy (the record was removed).
    pub(super) fn forget(&self, key: &str) {
        let mut g = self.lock();
        g.current.remove(key);
        g.previous.remove(key);
    }

    /// Copies kept (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.lock();
        g.current.len() + g.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, serde::Deserialize)]
    struct Rec {
        rev: u64,
    }

    #[test]
    fn a_copy_serves_only_a_version_it_has_reached() {
        let c = Copies::new();
        c.keep("k", 3, &Rec { rev: 3 });
        assert_eq!(c.get::<Rec>("k", 3), Some(Rec { rev: 3 }));
        assert_eq!(c.get::<Rec>("k", 2), Some(Rec { rev: 3 }));
        assert_eq!(
            c.get::<Rec>("k", 4),
            None,
            "an announced later write is not in it"
        );
        assert_eq!(c.get::<Rec>("other", 0), None);
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one() {
        let c = Copies::new();
        c.keep_json("k", 5, r#"{"rev":5}"#);
        c.keep("k", 4, &Rec { rev: 4 });
        assert_eq!(
            c.get::<Rec>("k", 0),
            Some(Rec { rev: 5 }),
            "parsed from the announcement"
        );
        c.keep("k", 6, &Rec { rev: 6 });
        assert_eq!(c.get::<Rec>("k", 6), Some(Rec { rev: 6 }));
        c.forget("k");
        assert_eq!(c.get::<Rec>("k", 0), None);
    }

    #[test]
    fn a_copy_of_another_type_or_bad_json_is_not_used() {
        let c = Copies::new();
        c.keep("k", 1, &"a string".to_owned());
        assert_eq!(c.get::<Rec>("k", 0), None);
        c.keep_json("j", 1, "not json");
        assert_eq!(c.get::<Rec>("j", 0), None);
    }

    #[test]
    fn memory_is_bounded_by_two_generations() {
        let c = Copies::new();
        for i in 0..(3 * GENERATION + 7) {
            c.keep(&format!("k{i}"), 1, &Rec { rev: 1 });
        }
        assert!(c.len() <= 2 * GENERATION, "{} copies", c.len());
        let last = format!("k{}", 3 * GENERATION + 6);
        assert!(c.get::<Rec>(&last, 1).is_some(), "the newest are kept");
        assert!(c.get::<Rec>("k0", 1).is_none(), "the oldest are gone");
    }
}
