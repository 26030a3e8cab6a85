//! [`KeyTable`]: the table of stored row hashes a plan probes once per row. Pure.
//!
//! Why not a `HashMap`: a plan of a million rows holds a million entries, and on the machines
//! klsync runs on (virtual, shared) every megabyte of fresh memory costs page faults that
//! showed up as a third of a profiled no-op plan. hashbrown rounds its buckets up to a power of
//! two with at most 7/8 of them used, so a million entries take 2,097,152 buckets of 24 bytes
//! (50 MB). This table has 5/4 as many slots as entries it is sized for, 16 bytes each, with
//! the 2-byte per-entry state in a parallel vector: 22.5 MB for a million.
//!
//! Open addressing with linear probing. Keys are already uniform 64-bit hashes, so a slot is
//! picked by multiply-shift range reduction (any table size), and key 0 marks an empty slot (a
//! real key 0 is stored as 1: two identifiers then share a key with probability 2^-64, the
//! same as any other collision of 64-bit keys).

/// A fixed-size table from 64-bit keys to a `u64` plus a small mutable state per entry.
#[derive(Debug, Clone)]
pub struct KeyTable<S> {
    /// `(key, value)`; key 0: empty.
    slots: Vec<(u64, u64)>,
    states: Vec<S>,
    len: usize,
}

impl<S: Copy + Default> KeyTable<S> {
    /// A table sized for `entries` entries (it grows past them, at the cost of rebuilding).
    pub fn with_capacity(entries: usize) -> Self {
        let slots = entries + entries / 4 + 8;
        KeyTable {
            slots: vec![(0, 0); slots],
            states: vec![S::default(); slots],
            len: 0,
        }
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn home(&self, key: u64) -> usize {
        ((u128::from(key) * self.slots.len() as u128) >> 64) as usize
    }

    /// The slot holding `key`, or the empty slot where it would go.
    fn find(&self, key: u64) -> usize {
        let key = key.max(1);
        let mut slot = self.home(key);
        loop {
            match self.slots[slot].0 {
                found if found == key => return slot,
                0 => return slot,
                _ => {
                    slot = if slot + 1 == self.slots.len() {
                        0
                    } else {
                        slot + 1
                    }
                }
            }
        }
    }

    /// Insert or replace `key`'s value (its state is reset).
    pub fn insert(&mut self, key: u64, value: u64) {
        let mut slot = self.find(key);
        if self.slots[slot].0 == 0 {
            // At most 4/5 of the slots are used, so probes stay short and always end.
            if (self.len + 1) * 5 > self.slots.len() * 4 {
                self.grow();
                slot = self.find(key);
            }
            self.len += 1;
        }
        self.slots[slot] = (key.max(1), value);
        self.states[slot] = S::default();
    }

    /// [`KeyTable::insert`] each entry, in order. Their slots are touched first, all of them
    /// (see [`KeyTable::touch`]), so filling a million-entry table does not wait for its cache
    /// misses one by one; a few thousand entries at a time keep the touched lines in cache.
    pub fn insert_all(&mut self, entries: &[(u64, u64)]) {
        for (key, _) in entries {
            self.touch(*key);
        }
        for (key, value) in entries {
            self.insert(*key, *value);
        }
    }

    /// Rebuild with room for twice as many entries.
    fn grow(&mut self) {
        let mut bigger = KeyTable::with_capacity(self.len.max(8) * 2);
        for ((key, value), state) in self.slots.iter().zip(&self.states) {
            if *key != 0 {
                let slot = bigger.find(*key);
                bigger.slots[slot] = (*key, *value);
                bigger.states[slot] = *state;
                bigger.len += 1;
            }
        }
        *self = bigger;
    }

    /// `key`'s value and state.
    pub fn get(&self, key: u64) -> Option<(u64, S)> {
        let slot = self.find(key);
        (self.slots[slot].0 != 0).then(|| (self.slots[slot].1, self.states[slot]))
    }

    /// `key`'s value and a handle on its state.
    pub fn get_mut(&mut self, key: u64) -> Option<(u64, &mut S)> {
        let slot = self.find(key);
        (self.slots[slot].0 != 0).then(|| (self.slots[slot].1, &mut self.states[slot]))
    }

    /// Whether `key` is in the table.
    pub fn contains_key(&self, key: u64) -> bool {
        self.get(key).is_some()
    }

    /// Bring `key`'s slot and state into the cache, for a [`KeyTable::get_mut`] soon after.
    /// Touching a batch of keys in a loop of its own lets the processor overlap their cache
    /// misses (a million-entry table fits in no cache); probed one by one amid other work,
    /// each miss is waited for in turn.
    pub fn touch(&self, key: u64) {
        let slot = self.find(key);
        std::hint::black_box(self.states[slot]);
    }

    /// Every entry's key and value.
    pub fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.slots.iter().copied().filter(|(key, _)| *key != 0)
    }

    /// Every entry's state.
    pub fn states(&self) -> impl Iterator<Item = S> + '_ {
        self.slots
            .iter()
            .zip(&self.states)
            .filter(|((key, _), _)| *key != 0)
            .map(|(_, state)| *state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_replaced_and_counted() {
        let mut table: KeyTable<u8> = KeyTable::with_capacity(1_000);
        // Consecutive keys all land near slot 0: the worst case for linear probing.
        for key in 0..1_000u64 {
            table.insert(key, key * 10);
        }
        // Key 0 is stored as 1, so 0 and 1 are one entry.
        assert_eq!(table.len(), 999);
        assert_eq!(table.get(500), Some((5_000, 0)));
        assert_eq!(table.get(0), Some((10, 0)));
        assert_eq!(table.get(5_000), None);
        *table.get_mut(7).unwrap().1 = 3;
        assert_eq!(table.get(7), Some((70, 3)));
        table.insert(7, 71);
        assert_eq!(table.get(7), Some((71, 0)), "replacing resets the state");
        assert_eq!(table.len(), 999);
        assert_eq!(table.states().count(), 999);
        // Spread keys too, including ones that wrap around the end.
        let mut spread: KeyTable<bool> = KeyTable::with_capacity(100);
        for n in 0..100u64 {
            spread.insert(u64::MAX - n, n);
        }
        assert!((0..100u64).all(|n| spread.get(u64::MAX - n) == Some((n, false))));
        assert!(spread.contains_key(u64::MAX));
        assert!(!spread.contains_key(12345));
    }

    #[test]
    fn a_table_grows_past_its_size_keeping_values_and_states() {
        let mut table: KeyTable<u8> = KeyTable::with_capacity(0);
        for key in 1..=5_000u64 {
            table.insert(key.wrapping_mul(0x9E37_79B9_7F4A_7C15), key);
            if key == 3 {
                *table
                    .get_mut(3u64.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                    .unwrap()
                    .1 = 9;
            }
        }
        assert_eq!(table.len(), 5_000);
        assert!((1..=5_000u64).all(|key| {
            table
                .get(key.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .map(|e| e.0)
                == Some(key)
        }));
        assert_eq!(
            table.get(3u64.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            Some((3, 9))
        );
        assert_eq!(table.get(0), None, "a lookup of a missing key ends");
    }

    #[test]
    fn inserting_all_at_once_is_inserting_one_by_one() {
        // Repeated keys (the later value wins) and growth past the initial size.
        let entries: Vec<(u64, u64)> = (0..3_000u64)
            .map(|n| ((n % 2_500).wrapping_mul(0x9E37_79B9_7F4A_7C15), n))
            .collect();
        let mut one_by_one: KeyTable<u8> = KeyTable::with_capacity(100);
        for (key, value) in &entries {
            one_by_one.insert(*key, *value);
        }
        let mut all: KeyTable<u8> = KeyTable::with_capacity(100);
        for batch in entries.chunks(700) {
            all.insert_all(batch);
        }
        assert_eq!(all.len(), 2_500);
        let mut expected: Vec<_> = one_by_one.entries().collect();
        let mut got: Vec<_> = all.entries().collect();
        expected.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, expected);
        assert_eq!(
            all.get(5u64.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            Some((2_505, 0))
        );
    }
}
