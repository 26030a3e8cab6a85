//! Splitting profiles into bulk import jobs. Pure.
//!
//! A job holds at most [`BULK_IMPORT_MAX_PROFILES`] profiles and its request body at most
//! [`BULK_IMPORT_MAX_BYTES`]. Profiles are added in order; a job is closed when the next profile
//! would break either limit. The body is the profiles' serialised objects joined by commas plus
//! an envelope (type, list relationship), bounded by [`ENVELOPE_BYTES`].

use crate::klaviyo::{BULK_IMPORT_MAX_BYTES, BULK_IMPORT_MAX_PROFILES};

/// Room kept for the job document around the profiles (type names, up to a few list ids).
pub const ENVELOPE_BYTES: usize = 4_096;

/// Assigns profiles to jobs as they come, by count and bytes.
#[derive(Debug, Clone)]
pub struct Chunker {
    max_count: usize,
    max_bytes: usize,
    count: usize,
    bytes: usize,
    jobs: usize,
}

impl Default for Chunker {
    fn default() -> Self {
        Chunker::new(
            BULK_IMPORT_MAX_PROFILES,
            BULK_IMPORT_MAX_BYTES - ENVELOPE_BYTES,
        )
    }
}

impl Chunker {
    /// A chunker with explicit limits (`max_bytes` for the profiles alone).
    pub fn new(max_count: usize, max_bytes: usize) -> Self {
        Chunker {
            max_count,
            max_bytes,
            count: 0,
            bytes: 0,
            jobs: 0,
        }
    }

    /// Add a profile of `size` serialised bytes; returns `true` when it starts a new job.
    pub fn push(&mut self, size: usize) -> bool {
        // One comma between profiles.
        let added = if self.count == 0 { size } else { size + 1 };
        let fresh =
            self.jobs == 0 || self.count >= self.max_count || self.bytes + added > self.max_bytes;
        if fresh {
            self.jobs += 1;
            self.count = 1;
            self.bytes = size;
        } else {
            self.count += 1;
            self.bytes += added;
        }
        fresh
    }

    /// Jobs started so far.
    pub fn jobs(&self) -> usize {
        self.jobs
    }
}

/// Ranges of `sizes` forming jobs, in order.
pub fn chunk_ranges(sizes: &[usize], chunker: Chunker) -> Vec<std::ops::Range<usize>> {
    let mut chunker = chunker;
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    for (index, size) in sizes.iter().enumerate() {
        if chunker.push(*size) {
            ranges.push(index..index + 1);
        } else if let Some(last) = ranges.last_mut() {
            last.end = index + 1;
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_by_count() {
        let sizes = vec![10; 25_001];
        let ranges = chunk_ranges(&sizes, Chunker::default());
        assert_eq!(ranges, vec![0..10_000, 10_000..20_000, 20_000..25_001]);
    }

    #[test]
    fn splits_by_bytes_counting_commas() {
        // 3 profiles of 10 bytes + 2 commas = 32 bytes fit exactly; a 4th does not.
        let ranges = chunk_ranges(&[10, 10, 10, 10], Chunker::new(100, 32));
        assert_eq!(ranges, vec![0..3, 3..4]);
        let ranges = chunk_ranges(&[10, 10, 10, 10], Chunker::new(100, 31));
        assert_eq!(ranges, vec![0..2, 2..4]);
    }

    #[test]
    fn large_profiles_fill_five_megabytes() {
        let sizes = vec![90_000; 120];
        let ranges = chunk_ranges(&sizes, Chunker::default());
        assert!(ranges.len() >= 3);
        for range in &ranges {
            let body: usize = sizes[range.clone()].iter().sum::<usize>() + range.len() - 1;
            assert!(body + ENVELOPE_BYTES <= BULK_IMPORT_MAX_BYTES);
        }
        assert_eq!(ranges.iter().map(|r| r.len()).sum::<usize>(), 120);
        assert!(chunk_ranges(&[], Chunker::default()).is_empty());
    }
}
