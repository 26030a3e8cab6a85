//! [`KeyTable`]: the table of stored row hashes a plan probes once per row. Pure.
//!
//! Why not a `HashMap`: a plan of a million rows holds a million entries, and on the machines
//! klsync runs on (virtual, shared) every megabyte of fresh memory costs page faults that
//! showed up as a third of a profiled no-op plan. hashbrown rounds its buckets up to a power of
//! two with at most 7/8 of them used, so a million entries take 2,097,152 buckets of 24 bytes
//! (50 MB). This table has 9/8 as many slots as entries it is sized for, 16 bytes each: 18 MB
//! for a million. So few spare slots make probes longer (at 8/9 full a stored key is found in
//! about 5 probes, often on the cache line after its home's, which [`KeyTable::touch`] loads
//! too; a missing key takes about 40), but fresh memory costs more than that: with 5/4
//! as many slots a 10,000,000-row no-op plan took 2.83 s, with 9/8 2.68 s (docs/BENCHMARKS.md).
//!
//! Each slot is `(key, value)`, and an entry's small mutable state lives in the low byte of
//! its value (values keep their top 56 bits): a probe, an insert or a state change then touches
//! one cache line, not two (a parallel state vector doubled the cache misses of a plan's
//! probes, which a million-entry table pays on nearly every row).
//!
//! Open addressing with linear probing. Keys are already uniform 64-bit hashes, so a slot is
//! picked by multiply-shift range reduction (any table size), and key 0 marks an empty slot (a
//! real key 0 is stored as 1: two identifiers then share a key with probability 2^-64, the
//! same as any other collision of 64-bit keys).

/// Slots in a 64-byte cache line.
const SLOTS_PER_LINE: usize = 64 / std::mem::size_of::<(u64, u64)>();

/// An entry's state, kept in one byte of its slot.
pub trait PackedState: Copy + Default {
    fn pack(self) -> u8;
    /// The state `pack` made this byte from (only such bytes are ever unpacked).
    fn unpack(byte: u8) -> Self;
}

/// Where an entry is in its table: valid until the table grows (entries only move then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry(usize);

/// The bits of a value the table keeps.
pub const VALUE_BITS: u64 = !0xff;

/// A table from 64-bit keys to a 56-bit value plus a small mutable state per entry.
#[derive(Debug, Clone)]
pub struct KeyTable<S> {
    /// `(key, value | state)`; key 0: empty.
    slots: Vec<(u64, u64)>,
    len: usize,
    fill: SortedFill,
    state: std::marker::PhantomData<S>,
}

/// How far entries were placed in increasing key order from an empty table (see
/// [`KeyTable::insert_all`]).
#[derive(Debug, Clone, Copy)]
enum SortedFill {
    Empty,
    /// The last entry placed: its key and slot. Every slot after it is empty.
    After {
        key: u64,
        slot: usize,
    },
    /// An entry came another way: entries are probed for.
    Off,
}

impl<S: PackedState> KeyTable<S> {
    /// A table sized for `entries` entries (it grows past them, at the cost of rebuilding).
    pub fn with_capacity(entries: usize) -> Self {
        let slots = entries + entries / 8 + 8;
        KeyTable {
            slots: vec![(0, 0); slots],
            len: 0,
            fill: SortedFill::Empty,
            state: std::marker::PhantomData,
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

    /// Insert or replace `key`'s value (its low 8 bits are dropped; the state is reset).
    pub fn insert(&mut self, key: u64, value: u64) {
        self.fill = SortedFill::Off;
        let mut slot = self.find(key);
        if self.slots[slot].0 == 0 {
            if self.over_full(self.len + 1) {
                self.grow();
                slot = self.find(key);
            }
            self.len += 1;
        }
        self.slots[slot] = (
            key.max(1),
            (value & VALUE_BITS) | u64::from(S::default().pack()),
        );
    }

    /// [`KeyTable::insert`] each entry, in order.
    ///
    /// Entries in increasing key order into a table that has had no other kind of insert (a
    /// digest is stored sorted) are placed without probing: with linear probing and keys placed
    /// by value, each such entry's slot is its home or the one after the previous entry's,
    /// whichever is later, so the table is written front to back (sequential writes, no
    /// loads). Any other entry is inserted as by [`KeyTable::insert`], after the slots of the
    /// rest of the batch are touched (see [`KeyTable::touch`]), so filling a million-entry
    /// table does not wait for its cache misses one by one.
    pub fn insert_all(&mut self, entries: &[(u64, u64)]) {
        let placed = self.place_sorted(entries);
        let rest = &entries[placed..];
        for (key, _) in rest {
            self.touch(*key);
        }
        for (key, value) in rest {
            self.insert(*key, *value);
        }
    }

    /// Place the leading entries of `entries` that continue a sorted fill (see
    /// [`KeyTable::insert_all`]); how many were placed.
    fn place_sorted(&mut self, entries: &[(u64, u64)]) -> usize {
        for (placed, &(key, value)) in entries.iter().enumerate() {
            let key = key.max(1);
            let home = self.home(key);
            let slot = match self.fill {
                SortedFill::Empty => home,
                SortedFill::After { key: last, slot } if key > last => home.max(slot + 1),
                _ => return placed,
            };
            // Past the end the probe would wrap to the front, and an over-full table grows:
            // both are left to `insert`.
            if slot >= self.slots.len() || self.over_full(self.len + 1) {
                return placed;
            }
            self.slots[slot] = (key, (value & VALUE_BITS) | u64::from(S::default().pack()));
            self.len += 1;
            self.fill = SortedFill::After { key, slot };
        }
        entries.len()
    }

    /// Whether `entries` would fill more than 9/10 of the slots: the table grows before that,
    /// so probes stay short and always end.
    fn over_full(&self, entries: usize) -> bool {
        entries * 10 > self.slots.len() * 9
    }

    /// Rebuild with room for twice as many entries.
    fn grow(&mut self) {
        let mut bigger = KeyTable::<S>::with_capacity(self.len.max(8) * 2);
        bigger.fill = SortedFill::Off;
        for (key, packed) in &self.slots {
            if *key != 0 {
                let slot = bigger.find(*key);
                bigger.slots[slot] = (*key, *packed);
                bigger.len += 1;
            }
        }
        *self = bigger;
    }

    /// `key`'s value and state.
    pub fn get(&self, key: u64) -> Option<(u64, S)> {
        self.entry(key).map(|entry| self.at(entry))
    }

    /// Where `key`'s entry is, to read it and set its state without probing again (a plan
    /// does both for every row).
    pub fn entry(&self, key: u64) -> Option<Entry> {
        let slot = self.find(key);
        (self.slots[slot].0 != 0).then_some(Entry(slot))
    }

    /// The value and state of the entry at `entry` (valid until the table next grows).
    pub fn at(&self, entry: Entry) -> (u64, S) {
        let packed = self.slots[entry.0].1;
        (packed & VALUE_BITS, S::unpack(packed as u8))
    }

    /// Set the state of the entry at `entry`.
    pub fn set_state_at(&mut self, entry: Entry, state: S) {
        let packed = &mut self.slots[entry.0].1;
        *packed = (*packed & VALUE_BITS) | u64::from(state.pack());
    }

    /// Set `key`'s state; `false` (and nothing changes) when `key` is not in the table.
    pub fn set_state(&mut self, key: u64, state: S) -> bool {
        let entry = self.entry(key);
        if let Some(entry) = entry {
            self.set_state_at(entry, state);
        }
        entry.is_some()
    }

    /// Bring `key`'s entry into the cache, for a [`KeyTable::get`] soon after. Touching a
    /// batch of keys in a loop of its own lets the processor overlap their cache misses (a
    /// million-entry table fits in no cache); probed one by one amid other work, each miss is
    /// waited for in turn.
    ///
    /// Loads the cache line of the key's home slot and the line after it, with no probing: a
    /// loop of plain loads has no branch on their values, so nothing stops the processor from
    /// running far ahead and having a dozen misses in flight. At 8/9 load an entry sits a
    /// median of 2-3 slots past its home and 87% within 8 (four slots a line), so the probe
    /// that follows runs off the home line about half the time. Touching the home line only, a
    /// probe of a 10,000,000-entry table took 73 ns (it waits for the second line, once per
    /// mispredicted branch); touching both, 59 (`cargo bench --bench table`, docs/BENCHMARKS.md).
    pub fn touch(&self, key: u64) {
        let home = self.home(key.max(1));
        let next = (home + SLOTS_PER_LINE).min(self.slots.len() - 1);
        std::hint::black_box(self.slots[home].0 ^ self.slots[next].0);
    }

    /// Every entry's key and value.
    pub fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.slots
            .iter()
            .filter(|(key, _)| *key != 0)
            .map(|(key, packed)| (*key, packed & VALUE_BITS))
    }

    /// Every entry's state.
    pub fn states(&self) -> impl Iterator<Item = S> + '_ {
        self.slots
            .iter()
            .filter(|(key, _)| *key != 0)
            .map(|(_, packed)| S::unpack(*packed as u8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl PackedState for u8 {
        fn pack(self) -> u8 {
            self
        }
        fn unpack(byte: u8) -> Self {
            byte
        }
    }

    impl PackedState for bool {
        fn pack(self) -> u8 {
            u8::from(self)
        }
        fn unpack(byte: u8) -> Self {
            byte != 0
        }
    }

    /// A value the table keeps whole (low byte clear).
    fn v(n: u64) -> u64 {
        n << 8
    }

    #[test]
    fn entries_are_found_replaced_and_counted() {
        let mut table: KeyTable<u8> = KeyTable::with_capacity(1_000);
        // Consecutive keys all land near slot 0: the worst case for linear probing.
        for key in 0..1_000u64 {
            table.insert(key, v(key * 10));
        }
        // Key 0 is stored as 1, so 0 and 1 are one entry.
        assert_eq!(table.len(), 999);
        assert_eq!(table.get(500), Some((v(5_000), 0)));
        assert_eq!(table.get(0), Some((v(10), 0)));
        assert_eq!(table.get(5_000), None);
        assert!(table.set_state(7, 3));
        assert_eq!(table.get(7), Some((v(70), 3)));
        assert!(!table.set_state(5_000, 3), "no state for a missing key");
        assert_eq!(table.get(5_000), None);
        table.insert(7, v(71));
        assert_eq!(table.get(7), Some((v(71), 0)), "replacing resets the state");
        assert_eq!(table.len(), 999);
        assert_eq!(table.states().count(), 999);
        // The low byte of a value is the state's: it is dropped, whatever the state does.
        table.insert(8, v(80) | 0xff);
        assert!(table.set_state(8, 0x5a));
        assert_eq!(table.get(8), Some((v(80), 0x5a)));
        assert_eq!(table.entries().find(|(key, _)| *key == 8), Some((8, v(80))));
        // Spread keys too, including ones that wrap around the end.
        let mut spread: KeyTable<bool> = KeyTable::with_capacity(100);
        for n in 0..100u64 {
            spread.insert(u64::MAX - n, v(n));
        }
        assert!((0..100u64).all(|n| spread.get(u64::MAX - n) == Some((v(n), false))));
        assert!(spread.get(u64::MAX).is_some());
        assert!(spread.get(12345).is_none());
    }

    #[test]
    fn a_table_grows_past_its_size_keeping_values_and_states() {
        let mut table: KeyTable<u8> = KeyTable::with_capacity(0);
        let key = |n: u64| n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for n in 1..=5_000u64 {
            table.insert(key(n), v(n));
            if n == 3 {
                assert!(table.set_state(key(3), 9));
            }
        }
        assert_eq!(table.len(), 5_000);
        assert!((1..=5_000u64).all(|n| table.get(key(n)).map(|e| e.0) == Some(v(n))));
        assert_eq!(table.get(key(3)), Some((v(3), 9)));
        assert_eq!(table.states().filter(|state| *state == 9).count(), 1);
        assert_eq!(table.get(0), None, "a lookup of a missing key ends");
    }

    #[test]
    fn a_sorted_fill_finds_what_inserting_one_by_one_finds() {
        // Sorted keys, crowded at the front and at the very end (where a probe would wrap),
        // then an unsorted batch, a repeated key and growth: after each step the table holds
        // what one-by-one inserts give.
        let crowded = |n: u64| if n < 300 { n } else { u64::MAX - (1_000 - n) };
        let mut keys: Vec<u64> = (0..1_000u64).map(crowded).collect();
        keys.sort_unstable();
        let batches: Vec<Vec<(u64, u64)>> = vec![
            keys[..600].iter().map(|k| (*k, v(*k % 1_000))).collect(),
            keys[600..].iter().map(|k| (*k, v(*k % 977))).collect(),
            vec![(5, v(1)), (3, v(2)), (keys[999], v(3))],
            (0..2_000u64)
                .map(|n| (n.wrapping_mul(0x9E37_79B9_7F4A_7C15), v(n)))
                .collect(),
        ];
        let mut one_by_one: KeyTable<u8> = KeyTable::with_capacity(1_000);
        let mut all: KeyTable<u8> = KeyTable::with_capacity(1_000);
        for batch in &batches {
            for (key, value) in batch {
                one_by_one.insert(*key, *value);
            }
            all.insert_all(batch);
            assert_eq!(all.len(), one_by_one.len());
            for (key, _) in batches.iter().flatten() {
                assert_eq!(all.get(*key), one_by_one.get(*key), "key {key}");
            }
        }
        assert_eq!(all.get(0), all.get(1), "key 0 is stored as 1");
        assert_eq!(all.get(12_345), None);
    }

    #[test]
    fn inserting_all_at_once_is_inserting_one_by_one() {
        // Repeated keys (the later value wins) and growth past the initial size.
        let entries: Vec<(u64, u64)> = (0..3_000u64)
            .map(|n| ((n % 2_500).wrapping_mul(0x9E37_79B9_7F4A_7C15), v(n)))
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
            Some((v(2_505), 0))
        );
    }
}
