//! A small least-recently-used cache, bounded by entries and by bytes.

use std::collections::VecDeque;

/// Entries in use order (oldest first); a lookup is a linear scan, fine for the
/// few dozen entries the server keeps.
#[derive(Debug)]
pub(super) struct Lru<K, V> {
    items: VecDeque<(K, V, usize)>,
    max_items: usize,
    max_bytes: usize,
    used: usize,
}

impl<K: PartialEq, V: Clone> Lru<K, V> {
    /// At most `max_items` entries and `max_bytes` bytes (the newest entry is kept
    /// even when it alone is bigger).
    pub(super) fn new(max_items: usize, max_bytes: usize) -> Self {
        Lru {
            items: VecDeque::new(),
            max_items: max_items.max(1),
            max_bytes,
            used: 0,
        }
    }

    /// The value of `key`, now the most recently used.
    pub(super) fn get(&mut self, key: &K) -> Option<V> {
        let i = self.items.iter().position(|(k, _, _)| k == key)?;
        let item = self.items.remove(i)?;
        let v = item.1.clone();
        self.items.push_back(item);
        Some(v)
    }

    /// Inserts (or replaces) `key`, weighing `bytes`; evicts the oldest entries
    /// past the bounds.
    pub(super) fn put(&mut self, key: K, value: V, bytes: usize) {
        if let Some(i) = self.items.iter().position(|(k, _, _)| *k == key) {
            if let Some((_, _, b)) = self.items.remove(i) {
                self.used -= b;
            }
        }
        self.items.push_back((key, value, bytes));
        self.used += bytes;
        while self.items.len() > 1
            && (self.items.len() > self.max_items || self.used > self.max_bytes)
        {
            if let Some((_, _, b)) = self.items.pop_front() {
                self.used -= b;
            }
        }
    }

    /// Number of entries.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn evicts_the_least_recently_used_by_count_and_bytes() {
        let mut c = Lru::new(2, 100);
        c.put("a", 1, 10);
        c.put("b", 2, 10);
        assert_eq!(c.get(&"a"), Some(1)); // a is now newer than b
        c.put("c", 3, 10);
        assert_eq!(c.get(&"b"), None);
        assert_eq!(c.get(&"a"), Some(1));
        assert_eq!(c.get(&"c"), Some(3));
        // Bytes: a 95-byte entry pushes out the rest; a lone huge one stays.
        c.put("d", 4, 95);
        assert_eq!(c.len(), 1);
        c.put("e", 5, 1000);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&"e"), Some(5));
        // Replacing a key re-weighs it.
        c.put("e", 6, 1);
        c.put("f", 7, 1);
        assert_eq!((c.get(&"e"), c.get(&"f")), (Some(6), Some(7)));
    }
}
