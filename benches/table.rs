//! The stored-hash table's probes, the part of a no-op plan that waits on memory: a plan
//! touches each batch's entries first (`KeyTable::touch`), then probes them. Prints, per table
//! size, the nanoseconds a probe takes without touching, and after touching a batch of 1,024.
//!
//!   cargo bench --bench table            # sizes: KLSYNC_BENCH_TABLE (default 1000000,10000000)
//!
//! Keys are inserted sorted (as a digest loads) and probed in a shuffled order (as a query's
//! rows come), all present (a no-op plan). Uses mimalloc, as the `klsync` binary does, so the
//! table sits on the same (transparent huge) pages.

use std::time::Instant;

use klsync::sync::table::{KeyTable, PackedState};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, Default)]
struct State(u8);

impl PackedState for State {
    fn pack(self) -> u8 {
        self.0
    }
    fn unpack(byte: u8) -> Self {
        State(byte)
    }
}

/// A fixed permutation of 64-bit values (splitmix64's finaliser): uniform keys, reproducible.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Rows a plan classifies at once (`ROW_BATCH` in `src/sql/mod.rs`).
const BATCH: usize = 1024;

fn main() {
    let sizes: Vec<usize> = std::env::var("KLSYNC_BENCH_TABLE")
        .unwrap_or_else(|_| "1000000,10000000".to_string())
        .split(',')
        .map(|size| {
            size.trim()
                .parse()
                .expect("KLSYNC_BENCH_TABLE: sizes, comma-separated")
        })
        .collect();
    println!("| entries | probe, untouched | probe, batch touched first |");
    println!("|---:|---:|---:|");
    for size in sizes {
        let mut keys: Vec<u64> = (1..=size as u64).map(mix).collect();
        let mut sorted: Vec<(u64, u64)> = keys.iter().map(|key| (*key, key << 8)).collect();
        sorted.sort_unstable();
        let mut table = KeyTable::<State>::with_capacity(size);
        for chunk in sorted.chunks(2048) {
            table.insert_all(chunk);
        }
        drop(sorted);
        for i in (1..keys.len()).rev() {
            keys.swap(i, (mix(i as u64 ^ 0x5eed) % (i as u64 + 1)) as usize);
        }
        let mut entries = Vec::with_capacity(BATCH);
        let mut probe = |touch: bool| {
            let started = Instant::now();
            let mut found = 0;
            for batch in keys.chunks(BATCH) {
                if touch {
                    batch.iter().for_each(|key| table.touch(*key));
                }
                entries.clear();
                entries.extend(batch.iter().map(|key| table.entry(*key)));
                found += entries.iter().flatten().count();
            }
            assert_eq!(found, size, "every key is in the table");
            started.elapsed().as_nanos() as f64 / size as f64
        };
        // Best of three of each, alternating, against the machine's noise.
        let (mut untouched, mut touched) = (f64::MAX, f64::MAX);
        for _ in 0..3 {
            untouched = untouched.min(probe(false));
            touched = touched.min(probe(true));
        }
        println!("| {size} | {untouched:.1} ns | {touched:.1} ns |");
    }
}
