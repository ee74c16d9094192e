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
        std::str::from_utf8(&self.arena[from as usize..to as usize]).unwrap_or("")
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.spans.iter().position(|s| self.text(s[0], s[1]) == key)
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
