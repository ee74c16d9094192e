//! `ExtFields`: a command's header fields, stored in one inline byte arena so that decoding a
//! request or building a response allocates nothing for ordinary headers (a SEND_MESSAGE_V2
//! header and its response fit inline; larger ones spill to the heap, correctly).

use std::fmt;

use smallvec::SmallVec;

/// Inline capacity of the arena: room for a send request's fields and properties string.
const ARENA: usize = 768;
const FIELDS: usize = 16;

/// (key start, key end, value start, value end) in the arena.
type Span = [u32; 4];

/// Value start of a decoded field that is absent (JSON null or a non-scalar): it takes part
/// in resolving duplicates (a later null hides an earlier value, as in a Java map) and is
/// dropped by `finish_decode`.
const ABSENT: u32 = u32::MAX;

/// Up to this many decoded fields are deduplicated pairwise in place (no allocation: a
/// request header has about 15); more are sorted once.
const DEDUP_IN_PLACE: usize = 32;

#[derive(Clone, Default)]
pub struct ExtFields {
    arena: SmallVec<[u8; ARENA]>,
    spans: SmallVec<[Span; FIELDS]>,
}

struct ArenaWriter<'a>(&'a mut SmallVec<[u8; ARENA]>);

impl fmt::Write for ArenaWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl ExtFields {
    pub fn new() -> Self {
        Self::default()
    }

    fn text(&self, from: u32, to: u32) -> &str {
        // Every span was written from a &str or a `fmt::Write`, so it is valid UTF-8.
        std::str::from_utf8(&self.arena[from as usize..to as usize])
            .expect("ext spans are written from &str")
    }

    fn position(&self, key: &str) -> Option<usize> {
        // Bytes, not text: a lookup scans every key, and validating each as UTF-8 first
        // was most of a send header's field reads.
        let key = key.as_bytes();
        self.spans.iter().position(|s| self.key_bytes(s) == key)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).map(|i| {
            let s = self.spans[i];
            self.text(s[2], s[3])
        })
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Sets `key` to whatever `value` writes; replaces an earlier value of the same key.
    pub fn insert_with(
        &mut self,
        key: &str,
        value: impl FnOnce(&mut dyn fmt::Write) -> fmt::Result,
    ) {
        if let Some(i) = self.position(key) {
            self.spans.remove(i);
        }
        let k0 = self.arena.len() as u32;
        self.arena.extend_from_slice(key.as_bytes());
        let k1 = self.arena.len() as u32;
        // Writing into a Vec cannot fail.
        let _ = value(&mut ArenaWriter(&mut self.arena));
        let v1 = self.arena.len() as u32;
        self.spans.push([k0, k1, k1, v1]);
    }

    /// Sets `key` to `value`'s `Display` form, without an intermediate `String`.
    pub fn insert(&mut self, key: &str, value: impl fmt::Display) {
        self.insert_with(key, |w| write!(w, "{value}"));
    }

    pub fn remove(&mut self, key: &str) -> bool {
        match self.position(key) {
            Some(i) => {
                self.spans.remove(i);
                true
            }
            None => false,
        }
    }

    /// Appends a decoded field without looking for an earlier one of the same key (which
    /// would make decoding quadratic in the key count): `finish_decode` resolves duplicates
    /// once, at the end.
    pub(crate) fn push_with(
        &mut self,
        key: &str,
        value: impl FnOnce(&mut dyn fmt::Write) -> fmt::Result,
    ) {
        let k0 = self.arena.len() as u32;
        self.arena.extend_from_slice(key.as_bytes());
        let k1 = self.arena.len() as u32;
        let _ = value(&mut ArenaWriter(&mut self.arena));
        let v1 = self.arena.len() as u32;
        self.spans.push([k0, k1, k1, v1]);
    }

    /// Marks the field pushed last as absent (its value was null or not a scalar).
    pub(crate) fn mark_last_absent(&mut self) {
        if let Some(s) = self.spans.last_mut() {
            self.arena.truncate(s[2] as usize);
            s[2] = ABSENT;
            s[3] = ABSENT;
        }
    }

    fn key_bytes(&self, s: &Span) -> &[u8] {
        &self.arena[s[0] as usize..s[1] as usize]
    }

    /// Whether two fields have the same key: lengths and first bytes first, inline (a
    /// send's keys are one letter each, all different), the bytes only when those agree.
    fn same_key(&self, a: &Span, b: &Span) -> bool {
        let (ka, kb) = (self.key_bytes(a), self.key_bytes(b));
        ka.len() == kb.len() && ka.first() == kb.first() && ka == kb
    }

    /// Resolves the fields pushed by decoding: of a key given more than once the last one
    /// wins (as fastjson into a Java HashMap), and absent ones go. Returns the key
    /// comparisons made (the work counter the codec's property tests bound): at most
    /// `DEDUP_IN_PLACE²/2` for small headers, `n·log₂n` and a little for large ones.
    pub(crate) fn finish_decode(&mut self) -> u64 {
        let n = self.spans.len();
        let mut comparisons = 0u64;
        if n <= DEDUP_IN_PLACE {
            // Pairwise, in place: keep a field unless a later one has the same key.
            let mut keep = [true; DEDUP_IN_PLACE];
            for (i, kept) in keep.iter_mut().enumerate().take(n) {
                let key = &self.spans[i];
                for later in &self.spans[i + 1..] {
                    comparisons += 1;
                    if self.same_key(key, later) {
                        *kept = false;
                        break;
                    }
                }
            }
            let mut at = 0;
            self.spans.retain(|s| {
                let k = keep[at] && s[2] != ABSENT;
                at += 1;
                k
            });
        } else {
            // Sort positions by (key, position): the last of each run of equal keys wins.
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.sort_unstable_by(|&a, &b| {
                comparisons += 1;
                self.key_bytes(&self.spans[a as usize])
                    .cmp(self.key_bytes(&self.spans[b as usize]))
                    .then(a.cmp(&b))
            });
            let mut keep = vec![false; n];
            for w in 0..n {
                let last_of_run = w + 1 == n || {
                    comparisons += 1;
                    self.key_bytes(&self.spans[order[w] as usize])
                        != self.key_bytes(&self.spans[order[w + 1] as usize])
                };
                if last_of_run {
                    keep[order[w] as usize] = true;
                }
            }
            let mut at = 0;
            self.spans.retain(|s| {
                let k = keep[at] && s[2] != ABSENT;
                at += 1;
                k
            });
        }
        comparisons
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Fields in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans
            .iter()
            .map(|s| (self.text(s[0], s[1]), self.text(s[2], s[3])))
    }

    /// Whether the fields still live inline (no heap allocation behind them).
    pub fn is_inline(&self) -> bool {
        !self.arena.spilled() && !self.spans.spilled()
    }

    fn sorted(&self) -> Vec<(&str, &str)> {
        let mut v: Vec<_> = self.iter().collect();
        v.sort();
        v
    }
}

/// Equal when they hold the same key/value pairs, in any order (a header is a map).
impl PartialEq for ExtFields {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.sorted() == other.sorted()
    }
}

impl Eq for ExtFields {}

impl fmt::Debug for ExtFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for ExtFields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut e = ExtFields::new();
        for (k, v) in iter {
            e.insert(k.as_ref(), v.as_ref());
        }
        e
    }
}
