//! The cache of answers: bodies in memory, each dropped when a notified
//! write touches its range, bounded in count and bytes.
//!
//! Architecture Invariant: a cached answer is never served after a write
//! into its range has been notified: the cache drops what a notice touches
//! and refuses to store answers computed before the latest notice. While the
//! notification listener is down, nothing is cached.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use chrono::NaiveDate;
use sha2::{Digest, Sha256};

use crate::domain::rollup::RollupInfo;
use crate::domain::time::DayRange;
use crate::sql::table::KeyKind;
use crate::store::notify::{WriteListener, WriteNotice};

/// A cached answer: the serialized body and its ETag.
#[derive(Debug, Clone)]
pub struct Cached {
    pub body: Bytes,
    pub etag: String,
    pub content_type: &'static str,
    pub served_from: String,
    /// The body gzip-compressed, for large answers.
    pub gzip: Option<Bytes>,
}

impl Cached {
    /// Memory it holds.
    fn size(&self) -> usize {
        self.body.len() + self.gzip.as_ref().map_or(0, Bytes::len)
    }
}

struct Entry {
    dataset: String,
    start: Option<NaiveDate>,
    end: Option<NaiveDate>,
    value: Cached,
}

/// The cached answers, oldest first in `order`, and the memory they hold.
#[derive(Default)]
struct Entries {
    map: HashMap<String, Entry>,
    order: VecDeque<String>,
    bytes: usize,
}

impl Entries {
    fn remove(&mut self, key: &str) {
        if let Some(e) = self.map.remove(key) {
            self.bytes -= e.value.size();
            self.order.retain(|k| k != key);
        }
    }

    fn clear(&mut self) {
        *self = Entries::default();
    }
}

/// What a plan reads from: the fact table (quoted), the type of its time
/// column, and the dataset's current rollups.
#[derive(Debug, Clone)]
pub struct Sources {
    pub table: String,
    pub time_key: Option<KeyKind>,
    /// Whether its time column may be NULL (see `plan::Facts`).
    pub time_nullable: bool,
    pub rollups: Vec<RollupInfo>,
}

/// Answers in memory, each dropped when a notified write touches its range;
/// at most `capacity` of them in at most `max_bytes`, oldest evicted first.
pub struct Cache {
    entries: Mutex<Entries>,
    /// Per dataset: its table and current rollups, so a request plans
    /// without catalog queries. Dropped with the dataset's answers.
    sources: Mutex<HashMap<String, Sources>>,
    generation: AtomicU64,
    listening: AtomicBool,
    capacity: usize,
    max_bytes: usize,
}

impl Cache {
    pub fn new(capacity: usize, max_bytes: usize) -> Cache {
        Cache {
            entries: Mutex::new(Entries::default()),
            sources: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            capacity,
            max_bytes,
        }
    }

    /// The generation to pass to [`Cache::store`] for an answer computed from now on.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Whether answers may be cached now: only while writes are heard.
    /// Any range qualifies, open or reaching today: every write path
    /// notifies the days it touched, so a later write drops the answer.
    pub fn enabled(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// How many answers the cache holds, and their bytes.
    pub fn usage(&self) -> (usize, usize) {
        self.entries
            .lock()
            .map_or((0, 0), |e| (e.map.len(), e.bytes))
    }

    pub fn get(&self, key: &str) -> Option<Cached> {
        let guard = self.entries.lock().ok()?;
        guard.map.get(key).map(|e| e.value.clone())
    }

    /// Stores an answer computed at `generation`, unless a write was notified
    /// since. True when it stored a body the cache did not hold (an answer
    /// recomputed unchanged keeps its entry, compressed body included).
    pub fn store(
        &self,
        key: String,
        dataset: &str,
        start: Option<NaiveDate>,
        end: Option<NaiveDate>,
        generation: u64,
        value: Cached,
    ) -> bool {
        let Ok(mut guard) = self.entries.lock() else {
            return false;
        };
        // Checked under the lock that invalidation also takes.
        if generation != self.generation.load(Ordering::SeqCst)
            || !self.listening.load(Ordering::SeqCst)
        {
            return false;
        }
        let entries = &mut *guard;
        if entries
            .map
            .get(&key)
            .is_some_and(|e| e.value.etag == value.etag)
        {
            return false;
        }
        entries.remove(&key);
        // One answer may take at most a quarter of the budget.
        let size = value.size();
        if size > self.max_bytes / 4 {
            return false;
        }
        while entries.map.len() >= self.capacity || entries.bytes + size > self.max_bytes {
            let Some(old) = entries.order.front().cloned() else {
                break;
            };
            entries.remove(&old);
            metrics::counter!("clue_cache_evictions_total").increment(1);
        }
        entries.bytes += size;
        entries.order.push_back(key.clone());
        entries.map.insert(
            key,
            Entry {
                dataset: dataset.to_owned(),
                start,
                end,
                value,
            },
        );
        true
    }

    /// Adds the compressed body to the entry `key` if it still holds the
    /// answer tagged `etag` (a write may have dropped or replaced it since).
    pub fn attach_gzip(&self, key: &str, etag: &str, gzip: Bytes) {
        if let Ok(mut guard) = self.entries.lock() {
            let entries = &mut *guard;
            if entries.bytes + gzip.len() <= self.max_bytes
                && let Some(entry) = entries.map.get_mut(key)
                && entry.value.etag == etag
                && entry.value.gzip.is_none()
            {
                entries.bytes += gzip.len();
                entry.value.gzip = Some(gzip);
            }
        }
    }

    /// The table and rollups of a dataset, when known since the last write to it.
    pub fn sources(&self, dataset: &str) -> Option<Sources> {
        if !self.listening.load(Ordering::SeqCst) {
            return None;
        }
        self.sources.lock().ok()?.get(dataset).cloned()
    }

    /// Remembers a dataset's sources looked up at `generation`.
    pub fn store_sources(&self, dataset: &str, generation: u64, known: Sources) {
        let Ok(guard) = self.entries.lock() else {
            return;
        };
        if generation == self.generation.load(Ordering::SeqCst)
            && self.listening.load(Ordering::SeqCst)
            && let Ok(mut sources) = self.sources.lock()
        {
            sources.insert(dataset.to_owned(), known);
        }
        drop(guard);
    }

    /// Drops what a write into `dataset` over `[lo, hi]` (or everything of it) touches.
    pub fn invalidate(&self, dataset: &str, range: Option<DayRange>) {
        let Ok(mut guard) = self.entries.lock() else {
            return;
        };
        // New partitions, rebuilt rollups, fresh row estimates: look them up again.
        if let Ok(mut sources) = self.sources.lock() {
            sources.remove(dataset);
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        let Entries { map, order, bytes } = &mut *guard;
        map.retain(|_, e| {
            let keep = e.dataset != dataset
                || match range {
                    None => false,
                    Some(r) => {
                        e.end.is_some_and(|end| end < r.first)
                            || e.start.is_some_and(|s| s > r.last)
                    }
                };
            if !keep {
                *bytes -= e.value.size();
            }
            keep
        });
        order.retain(|k| map.contains_key(k));
    }

    /// Parses a `clue_writes` payload (`dataset lo hi` or `dataset *`).
    pub fn on_notification(&self, payload: &str) {
        self.on_write(WriteNotice::parse(payload));
    }

    /// Marks the listener up or down; going down forgets everything.
    pub fn set_listening(&self, up: bool) {
        WriteListener::set_listening(self, up);
    }
}

impl WriteListener for Cache {
    fn on_write(&self, notice: WriteNotice) {
        self.invalidate(&notice.dataset, notice.days);
    }

    fn set_listening(&self, up: bool) {
        if !up && let Ok(mut guard) = self.entries.lock() {
            guard.clear();
            if let Ok(mut sources) = self.sources.lock() {
                sources.clear();
            }
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.listening.store(up, Ordering::SeqCst);
    }
}

/// ETag of a body.
pub fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn value(tag: &str) -> Cached {
        Cached {
            body: Bytes::from(tag.to_owned()),
            etag: etag(tag.as_bytes()),
            content_type: "text/plain",
            gzip: None,
            served_from: String::new(),
        }
    }

    #[test]
    fn writes_invalidate_overlapping_answers_only() {
        let cache = Cache::new(10, 1 << 20);
        cache.set_listening(true);
        let g = cache.generation();
        cache.store(
            "q1".into(),
            "sales",
            Some(d("2024-01-01")),
            Some(d("2024-03-31")),
            g,
            value("1"),
        );
        cache.store(
            "q2".into(),
            "sales",
            Some(d("2024-06-01")),
            Some(d("2024-06-30")),
            g,
            value("2"),
        );
        cache.store("q3".into(), "other", None, None, g, value("3"));
        // Open ranges: from a day on, and everything.
        cache.store(
            "q4".into(),
            "sales",
            Some(d("2024-05-01")),
            None,
            g,
            value("4"),
        );
        cache.store("q5".into(), "sales", None, None, g, value("5"));
        cache.on_notification("sales 2024-03-15 2024-04-02");
        assert!(cache.get("q1").is_none(), "overlapping answer dropped");
        assert!(cache.get("q2").is_some());
        assert!(cache.get("q3").is_some(), "other datasets untouched");
        assert!(cache.get("q4").is_some(), "starts after the write");
        assert!(cache.get("q5").is_none(), "the whole range holds the write");
        cache.on_notification("sales 2030-01-01 2030-01-01");
        assert!(cache.get("q4").is_none(), "a late write into an open range");
        cache.on_notification("sales *");
        assert!(cache.get("q2").is_none());
    }

    #[test]
    fn an_answer_computed_before_a_write_is_not_stored() {
        let cache = Cache::new(10, 1 << 20);
        cache.set_listening(true);
        let before = cache.generation();
        cache.on_notification("sales 2030-01-01 2030-01-01");
        cache.store(
            "q".into(),
            "sales",
            None,
            Some(d("2024-01-31")),
            before,
            value("stale"),
        );
        assert!(cache.get("q").is_none());
    }

    #[test]
    fn nothing_is_cached_without_the_listener() {
        let cache = Cache::new(10, 1 << 20);
        assert!(!cache.enabled());
        cache.store(
            "q".into(),
            "sales",
            None,
            None,
            cache.generation(),
            value("x"),
        );
        assert!(cache.get("q").is_none(), "not stored while not listening");
        cache.set_listening(true);
        assert!(cache.enabled());
        cache.store(
            "q".into(),
            "sales",
            None,
            Some(d("2024-01-31")),
            cache.generation(),
            value("x"),
        );
        cache.set_listening(false);
        assert!(
            cache.get("q").is_none(),
            "losing the listener forgets everything"
        );
    }

    #[test]
    fn compressed_bodies_attach_to_the_answer_they_were_made_from() {
        let cache = Cache::new(10, 1 << 20);
        cache.set_listening(true);
        let v = value("x");
        cache.store("q".into(), "s", None, None, cache.generation(), v.clone());
        cache.attach_gzip("q", "\"other\"", Bytes::from_static(b"gz-other"));
        assert_eq!(cache.get("q").unwrap().gzip, None, "another answer's body");
        cache.attach_gzip("q", &v.etag, Bytes::from_static(b"gz"));
        assert_eq!(
            cache.get("q").unwrap().gzip,
            Some(Bytes::from_static(b"gz"))
        );
        cache.attach_gzip("gone", &v.etag, Bytes::from_static(b"gz"));
        assert!(cache.get("gone").is_none());
        // Recomputed unchanged (Cache-Control: no-cache): kept, compressed body too.
        assert!(!cache.store("q".into(), "s", None, None, cache.generation(), v.clone()));
        assert_eq!(
            cache.get("q").unwrap().gzip,
            Some(Bytes::from_static(b"gz"))
        );
        // Recomputed different: replaced, once.
        assert!(cache.store("q".into(), "s", None, None, cache.generation(), value("y")));
        assert_eq!(cache.get("q").unwrap().body, Bytes::from_static(b"y"));
        assert_eq!(cache.get("q").unwrap().gzip, None);
        assert_eq!(cache.entries.lock().unwrap().order.len(), 1);
        assert_eq!(cache.entries.lock().unwrap().bytes, 1);
    }

    #[test]
    fn the_byte_budget_evicts_the_oldest_and_refuses_giants() {
        let cache = Cache::new(100, 40);
        cache.set_listening(true);
        let sized = |n: usize| Cached {
            body: Bytes::from(vec![b'x'; n]),
            etag: etag(&n.to_le_bytes()),
            content_type: "text/plain",
            gzip: None,
            served_from: String::new(),
        };
        let g = cache.generation();
        assert!(cache.store("a".into(), "s", None, None, g, sized(10)));
        assert!(cache.store("b".into(), "s", None, None, g, sized(10)));
        assert!(cache.store("c".into(), "s", None, None, g, sized(10)));
        assert!(cache.store("d".into(), "s", None, None, g, sized(10)));
        assert!(
            !cache.store("giant".into(), "s", None, None, g, sized(11)),
            "over a quarter of the budget"
        );
        assert!(cache.store("e".into(), "s", None, None, g, sized(5)));
        assert!(cache.get("a").is_none(), "the oldest made room");
        assert!(cache.get("b").is_some() && cache.get("e").is_some());
        assert_eq!(cache.entries.lock().unwrap().bytes, 35);
        // A compressed body that does not fit is not attached.
        cache.attach_gzip("b", &sized(10).etag, Bytes::from(vec![b'z'; 6]));
        assert_eq!(cache.get("b").unwrap().gzip, None);
        cache.on_notification("s *");
        assert_eq!(cache.entries.lock().unwrap().bytes, 0);
    }

    #[test]
    fn capacity_evicts_the_oldest() {
        let cache = Cache::new(2, 1 << 20);
        cache.set_listening(true);
        for k in ["a", "b", "c"] {
            cache.store(
                k.into(),
                "s",
                None,
                Some(d("2024-01-01")),
                cache.generation(),
                value(k),
            );
        }
        assert!(cache.get("a").is_none());
        assert!(cache.get("c").is_some());
    }
}
