//! Reproducible ids in Klaviyo's formats, drawn from a seeded RNG: 26-char ULIDs for profiles
//! and bulk jobs, 6-char alphanumeric ids for lists and segments, UUIDs for tags, tag groups and
//! import errors.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// ULID timestamps start here (2024-01-01T00:00:00Z) and advance one millisecond per id, so ids
/// sort by creation and do not depend on the wall clock.
const ULID_EPOCH_MS: u64 = 1_704_067_200_000;

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A seeded id generator.
#[derive(Debug)]
pub struct IdGen {
    rng: StdRng,
    ulid_counter: u64,
}

impl Default for IdGen {
    fn default() -> Self {
        IdGen::new(0)
    }
}

impl IdGen {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        // Distinct from the fault RNG stream so enabling faults does not change ids.
        IdGen {
            rng: StdRng::seed_from_u64(seed ^ 0x6b6c_7379_6e63_6964),
            ulid_counter: 0,
        }
    }

    /// A 26-character ULID.
    pub fn ulid(&mut self) -> String {
        self.ulid_counter += 1;
        let random: u128 = self.rng.random::<u128>() & ((1u128 << 80) - 1);
        ulid::Ulid::from_parts(ULID_EPOCH_MS + self.ulid_counter, random).to_string()
    }

    /// A 6-character alphanumeric id like `Y6nRLr`.
    pub fn short(&mut self) -> String {
        (0..6)
            .map(|_| char::from(ALPHANUMERIC[self.rng.random_range(0..ALPHANUMERIC.len())]))
            .collect()
    }

    /// A version-4 UUID.
    pub fn uuid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random::<[u8; 16]>())
            .into_uuid()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_klaviyo() {
        let mut ids = IdGen::new(1);
        let ulid = ids.ulid();
        assert_eq!(ulid.len(), 26);
        assert!(ulid.parse::<ulid::Ulid>().is_ok());
        let short = ids.short();
        assert_eq!(short.len(), 6);
        assert!(short.chars().all(|c| c.is_ascii_alphanumeric()));
        let uuid = ids.uuid();
        assert_eq!(uuid::Uuid::parse_str(&uuid).unwrap().get_version_num(), 4);
    }

    #[test]
    fn same_seed_same_ids_and_ulids_sort_by_creation() {
        let mut a = IdGen::new(5);
        let mut b = IdGen::new(5);
        let first: Vec<String> = (0..5).map(|_| a.ulid()).collect();
        let second: Vec<String> = (0..5).map(|_| b.ulid()).collect();
        assert_eq!(first, second);
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, first);
        assert_ne!(IdGen::new(6).short(), IdGen::new(5).short());
    }
}
