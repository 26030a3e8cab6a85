//! Row hashing and field-level comparison for `profiles:` syncs. Pure.
//!
//! A row's *properties* are its mapped columns, keyed by Klaviyo property name, nulls included.
//! Their hash is a 16-byte hash of their canonical JSON (object keys sorted at every depth,
//! serde_json's number and string formatting), so column order in the query and key order in
//! JSON columns never make a row look changed. Which hash is the sync's [`HashScheme`].

use std::collections::BTreeMap;
use std::hash::Hasher;

use klsync_core::data::FieldChange;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A row hash: 16 bytes (chance collisions need ~2^64 rows).
pub type RowHash = [u8; 16];

/// How a sync's row hashes are made. A row hash only ever meets hashes of the same scheme: it
/// is stored with its scheme (see [`hash_text`]), and a plan hashes rows with the scheme of
/// the sync's recorded rows. So a klsync that changes schemes never makes a recorded row look
/// changed: a sync keeps its scheme until every row is recorded again (`--resync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HashScheme {
    /// The first 16 bytes of SHA-256: every sync recorded before XXH3 came in.
    Sha256,
    /// XXH3-128, its bytes big-endian (as `xxhsum -H2` prints them): every sync recorded
    /// since. A tenth of a no-op plan's time went to SHA-256 (one compression a row, with the
    /// processor's SHA instructions); XXH3 hashes a short row in a few nanoseconds.
    ///
    /// It is not a cryptographic hash, and need not be: the hash only tells whether a row
    /// changed since klsync recorded it, and rows are filed under keys of a secret seed (see
    /// [`identifier_key`]), so the only collision anyone could contrive is between two values
    /// of one profile's own properties, which would keep that one profile's change from being
    /// sent. By chance, two different rows of one identifier collide with probability 2^-128.
    Xxh3,
}

impl Default for HashScheme {
    fn default() -> Self {
        HashScheme::CURRENT
    }
}

impl HashScheme {
    /// The scheme of syncs recorded from now on.
    pub const CURRENT: HashScheme = HashScheme::Xxh3;

    /// The hash of `data` under this scheme.
    pub fn hash(self, data: &[u8]) -> RowHash {
        match self {
            HashScheme::Sha256 => sha256_prefix(data),
            HashScheme::Xxh3 => xxhash_rust::xxh3::xxh3_128(data).to_be_bytes(),
        }
    }
}

/// The 64-bit key of a normalised identifier under `seed` (foldhash, fixed-seeded: fast enough
/// for the two million hashes of a million-row plan). Keys are only compared with keys of the
/// same seed: a secret seed means nobody can pick identifiers (sign-up emails, say) whose keys
/// collide on purpose, and 1,000,000 identifiers collide by chance with probability ~3e-8.
/// Stored keys (a profiles sync's digest) keep their seed beside them; see
/// `crate::state::sync_records`.
pub fn identifier_key(seed: u64, identifier: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(seed).hash_one(identifier)
}

/// [`identifier_key`] under a seed drawn at random once per process, for keys that are never
/// stored (a list's members, compared within one plan).
pub fn process_identifier_key(identifier: &str) -> u64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        std::collections::hash_map::RandomState::new().hash_one("klsync identifier key seed")
    });
    identifier_key(*SEED, identifier)
}

/// A hasher for keys that already are [`identifier_key`] hashes: uniformly distributed, so
/// hashing them again (SipHash, the default) would only cost time on a million-row plan.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for u64 keys; fold anything else in, for completeness.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// A map keyed by [`identifier_key`].
pub type KeyMap<V> = std::collections::HashMap<u64, V, std::hash::BuildHasherDefault<KeyHasher>>;
/// A set of [`identifier_key`]s.
pub type KeySet = std::collections::HashSet<u64, std::hash::BuildHasherDefault<KeyHasher>>;

/// The hash of a row's properties under `scheme`.
pub fn row_hash(scheme: HashScheme, properties: &Map<String, Value>) -> RowHash {
    let mut buffer = Vec::with_capacity(256);
    write_object(&mut buffer, properties);
    scheme.hash(&buffer)
}

/// [`row_hash`] of the object made of `properties`, which must come sorted by name and
/// unique (as a `BTreeMap`'s entries do): hashes a row without building a map for it.
pub fn row_hash_sorted<'a>(
    scheme: HashScheme,
    properties: impl Iterator<Item = (&'a str, &'a Value)>,
) -> RowHash {
    let (names, values): (Vec<&str>, Vec<&Value>) = properties.unzip();
    let mut hasher = RowHasher::new(names.into_iter());
    hasher.scheme = scheme;
    hasher.hash(values.into_iter())
}

/// [`row_hash_sorted`] for many rows with the same property names: the names are escaped once
/// and one buffer is reused, which matters in a million-row loop.
#[derive(Debug, Clone)]
pub struct RowHasher {
    /// Per property, what precedes its value: `{` or `,`, the JSON name, `:`.
    prefixes: Vec<Vec<u8>>,
    buffer: Vec<u8>,
    /// The scheme rows are hashed with: [`HashScheme::CURRENT`] unless set.
    pub scheme: HashScheme,
}

impl RowHasher {
    /// A hasher for rows of these property names (sorted, unique).
    pub fn new<'a>(names: impl Iterator<Item = &'a str>) -> Self {
        let prefixes = names
            .enumerate()
            .map(|(index, name)| {
                let mut prefix = vec![if index == 0 { b'{' } else { b',' }];
                serde_json::to_writer(&mut prefix, name).expect("strings serialize");
                prefix.push(b':');
                prefix
            })
            .collect();
        RowHasher {
            prefixes,
            buffer: Vec::with_capacity(256),
            scheme: HashScheme::CURRENT,
        }
    }

    /// The hash of the row whose values, in name order, are `values`.
    pub fn hash<'a>(&mut self, values: impl Iterator<Item = &'a Value>) -> RowHash {
        self.buffer.clear();
        for (prefix, value) in self.prefixes.iter().zip(values) {
            self.buffer.extend_from_slice(prefix);
            write_canonical(&mut self.buffer, value);
        }
        self.finish()
    }

    /// [`RowHasher::hash`] of the values of `row` in `columns` (in name order). Scalars are
    /// written straight from the row (no [`Value`] built); their JSON text is the same.
    pub fn hash_row(
        &mut self,
        row: &crate::sql::RowRef<'_>,
        columns: impl Iterator<Item = usize>,
    ) -> Result<RowHash, crate::sql::SqlError> {
        self.buffer.clear();
        for (prefix, column) in self.prefixes.iter().zip(columns) {
            self.buffer.extend_from_slice(prefix);
            if !row.write_scalar_json(column, &mut self.buffer)? {
                write_canonical(&mut self.buffer, &*row.value(column)?);
            }
        }
        Ok(self.finish())
    }

    fn finish(&mut self) -> RowHash {
        if self.prefixes.is_empty() {
            self.buffer.push(b'{');
        }
        self.buffer.push(b'}');
        self.scheme.hash(&self.buffer)
    }
}

/// The first 16 bytes of the sha256 of `data`.
///
/// Rows are short (most canonical rows fit one or two 64-byte blocks), and for them the block
/// function is called directly on the padded message: `Sha256::digest`'s buffering and
/// finalisation cost half again as much as the one compression itself, a million times per
/// plan. The padding is FIPS 180-4's: a 1 bit, zeros, the bit length as a big-endian u64.
fn sha256_prefix(data: &[u8]) -> RowHash {
    /// FIPS 180-4 5.3.3: sha256's initial hash value.
    const INITIAL: [u32; 8] = [
        0x6a09_e667,
        0xbb67_ae85,
        0x3c6e_f372,
        0xa54f_f53a,
        0x510e_527f,
        0x9b05_688c,
        0x1f83_d9ab,
        0x5be0_cd19,
    ];
    let mut hash = [0u8; 16];
    if data.len() > 2 * 64 - 9 {
        hash.copy_from_slice(&Sha256::digest(data)[..16]);
        return hash;
    }
    let mut blocks = [[0u8; 64]; 2];
    let count = if data.len() + 9 <= 64 { 1 } else { 2 };
    let (first, second) = data.split_at(data.len().min(64));
    blocks[0][..first.len()].copy_from_slice(first);
    blocks[1][..second.len()].copy_from_slice(second);
    let end = data.len();
    blocks[end / 64][end % 64] = 0x80;
    blocks[count - 1][56..].copy_from_slice(&(end as u64 * 8).to_be_bytes());
    let mut state = INITIAL;
    sha2::block_api::compress256(&mut state, &blocks[..count]);
    for (out, word) in hash.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    hash
}

/// The hash stored for a row: its properties' hash under `on_missing_row: keep`, and a hash of
/// that under `unset` (in the same scheme). A row's hash thus changes when the sync's mode
/// does, so every row is compared again (a null kept under `keep` must be removed under
/// `unset`).
pub fn mode_hash(scheme: HashScheme, properties: RowHash, unset_nulls: bool) -> RowHash {
    if !unset_nulls {
        return properties;
    }
    const UNSET: &[u8] = b"on_missing_row=unset:";
    let mut message = [0u8; UNSET.len() + 16];
    message[..UNSET.len()].copy_from_slice(UNSET);
    message[UNSET.len()..].copy_from_slice(&properties);
    // Under SHA-256 the same bytes as always: the short-message path is SHA-256 itself
    // (`the_short_message_sha256_is_sha256`).
    scheme.hash(&message)
}

/// What marks an [`HashScheme::Xxh3`] hash as stored (its first character); a SHA-256 one has
/// no mark.
pub const XXH3_MARK: &str = "x";

/// A row hash as stored: 32 lowercase hex digits, after `x` for [`HashScheme::Xxh3`].
pub fn hash_text(scheme: HashScheme, hash: &RowHash) -> String {
    match scheme {
        HashScheme::Sha256 => hex::encode(hash),
        HashScheme::Xxh3 => format!("{XXH3_MARK}{}", hex::encode(hash)),
    }
}

/// A stored hash back to its scheme and bytes; `None` for anything klsync did not write.
pub fn parse_hash(text: &str) -> Option<(HashScheme, RowHash)> {
    let (scheme, digits) = match text.strip_prefix(XXH3_MARK) {
        Some(digits) => (HashScheme::Xxh3, digits),
        None => (HashScheme::Sha256, text),
    };
    let bytes = hex::decode(digits).ok()?;
    Some((scheme, bytes.try_into().ok()?))
}

fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    let sorted: BTreeMap<&String, &Value> = map.iter().collect();
    out.push(b'{');
    for (index, (key, value)) in sorted.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, key).expect("strings serialize");
        out.push(b':');
        write_canonical(out, value);
    }
    out.push(b'}');
}

fn write_canonical(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => write_object(out, map),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(out, item);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("scalars serialize"),
    }
}

/// What one row needs sent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RowDelta {
    /// Non-null properties to write through bulk import (every non-null one when anything
    /// changed, so the profile ends up exactly as the row says).
    pub set: Map<String, Value>,
    /// Properties to remove with `patch_properties.unset`.
    pub unset: Vec<String>,
    /// The property-level changes, for the plan.
    pub changes: Vec<FieldChange>,
    /// What to store as applied once Klaviyo accepted the row.
    pub applied: Map<String, Value>,
}

/// Compare a row's properties with those last applied.
///
/// A null means "no value": with `unset_nulls` a property klsync had set is removed, without it
/// the property keeps its value (bulk import cannot clear, and `on_missing_row: keep` promises
/// never to delete data).
pub fn row_delta(
    applied: Option<&Map<String, Value>>,
    desired: &Map<String, Value>,
    unset_nulls: bool,
) -> RowDelta {
    let mut delta = RowDelta::default();
    for (property, value) in desired {
        let before = applied
            .and_then(|applied| applied.get(property))
            .filter(|value| !value.is_null());
        if value.is_null() {
            match before {
                Some(before) if unset_nulls => {
                    delta.unset.push(property.clone());
                    delta.changes.push(FieldChange {
                        property: property.clone(),
                        before: Some(before.clone()),
                        after: None,
                    });
                    delta.applied.insert(property.clone(), Value::Null);
                }
                Some(before) => {
                    delta.applied.insert(property.clone(), before.clone());
                }
                None => {
                    delta.applied.insert(property.clone(), Value::Null);
                }
            }
            continue;
        }
        if before != Some(value) {
            delta.changes.push(FieldChange {
                property: property.clone(),
                before: before.cloned(),
                after: Some(value.clone()),
            });
        }
        delta.applied.insert(property.clone(), value.clone());
    }
    if delta.changes.iter().any(|change| change.after.is_some()) {
        delta.set = desired
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
    }
    delta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_message_sha256_is_sha256() {
        // Every padding case: one block, the length spilling into a second, two blocks, and
        // the general path past them.
        for len in 0..200 {
            let data: Vec<u8> = (0..len).map(|n| (n * 7 + len) as u8).collect();
            let expected = Sha256::digest(&data);
            assert_eq!(sha256_prefix(&data)[..], expected[..16], "length {len}");
        }
    }
    /// The schemes' outputs are stored, so they must never change: pinned here (XXH3-128 as
    /// Python's `xxhash.xxh3_128_hexdigest` gives it, SHA-256 as `sha256sum`, cut), so a
    /// dependency update that changed them fails this test instead of resending every row.
    #[test]
    fn stored_hashes_never_change() {
        let row = map(json!({"shop_plan": "gold"}));
        assert_eq!(
            hash_text(HashScheme::Xxh3, &HashScheme::Xxh3.hash(b"")),
            "x99aa06d3014798d86001c324468d497f"
        );
        assert_eq!(
            hash_text(HashScheme::Xxh3, &row_hash(HashScheme::Xxh3, &row)),
            "xe2fd5e32bf04feabe18773e39a49c146"
        );
        assert_eq!(
            hash_text(HashScheme::Sha256, &row_hash(HashScheme::Sha256, &row)),
            SHA256_OF_GOLD
        );
        assert_eq!(
            parse_hash(SHA256_OF_GOLD),
            Some((HashScheme::Sha256, row_hash(HashScheme::Sha256, &row)))
        );
        // `unset` rows as every SHA-256 state recorded them.
        let gold = row_hash(HashScheme::Sha256, &row);
        let recorded = Sha256::new()
            .chain_update(b"on_missing_row=unset:")
            .chain_update(gold)
            .finalize();
        assert_eq!(
            mode_hash(HashScheme::Sha256, gold, true)[..],
            recorded[..16]
        );
    }

    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn hash_ignores_key_order_but_not_types() {
        let a = map(json!({"plan": "gold", "ltv": 10, "meta": {"x": 1, "y": [1, 2]}}));
        let b = map(json!({"meta": {"y": [1, 2], "x": 1}, "ltv": 10, "plan": "gold"}));
        for scheme in [HashScheme::Sha256, HashScheme::Xxh3] {
            let row_hash = |properties: &Map<String, Value>| row_hash(scheme, properties);
            assert_eq!(row_hash(&a), row_hash(&b));
            assert_ne!(
                row_hash(&a),
                row_hash(&map(
                    json!({"plan": "gold", "ltv": "10", "meta": {"x": 1, "y": [1, 2]}})
                ))
            );
            assert_ne!(
                row_hash(&a),
                row_hash(&map(
                    json!({"plan": "gold", "ltv": 10.5, "meta": {"x": 1, "y": [1, 2]}})
                ))
            );
            let sorted: BTreeMap<&str, &Value> = a.iter().map(|(k, v)| (k.as_str(), v)).collect();
            assert_eq!(row_hash_sorted(scheme, sorted.into_iter()), row_hash(&a));
            assert_eq!(
                row_hash_sorted(scheme, std::iter::empty()),
                row_hash(&Map::new())
            );
            let mut hasher = RowHasher::new(["ltv", "meta", "plan"].into_iter());
            hasher.scheme = scheme;
            for _ in 0..2 {
                assert_eq!(
                    hasher.hash([&a["ltv"], &a["meta"], &a["plan"]].into_iter()),
                    row_hash(&a)
                );
            }
            assert_eq!(mode_hash(scheme, row_hash(&a), false), row_hash(&a));
            assert_ne!(mode_hash(scheme, row_hash(&a), true), row_hash(&a));
            let text = hash_text(scheme, &row_hash(&a));
            assert_eq!(parse_hash(&text), Some((scheme, row_hash(&a))));
        }
        assert_ne!(
            row_hash(HashScheme::Sha256, &a),
            row_hash(HashScheme::Xxh3, &a)
        );
        assert_eq!(parse_hash("zz"), None);
        assert_eq!(parse_hash("x"), None);
    }

    /// `sha256sum` of `{"shop_plan":"gold"}`, its first 32 hex digits.
    const SHA256_OF_GOLD: &str = "b96813c72b89b278144cdea142f030b6";

    #[test]
    fn new_row_sets_every_non_null_property() {
        let delta = row_delta(None, &map(json!({"plan": "gold", "ltv": null})), true);
        assert_eq!(delta.set, map(json!({"plan": "gold"})));
        assert!(delta.unset.is_empty());
        assert_eq!(delta.changes.len(), 1);
        assert_eq!(delta.applied, map(json!({"plan": "gold", "ltv": null})));
    }

    #[test]
    fn changed_row_sends_all_values_and_reports_only_changes() {
        let before = map(json!({"plan": "gold", "ltv": 10}));
        let delta = row_delta(
            Some(&before),
            &map(json!({"plan": "gold", "ltv": 12})),
            true,
        );
        assert_eq!(delta.set, map(json!({"plan": "gold", "ltv": 12})));
        assert_eq!(
            delta.changes,
            vec![FieldChange {
                property: "ltv".into(),
                before: Some(json!(10)),
                after: Some(json!(12))
            }]
        );
    }

    #[test]
    fn null_unsets_only_when_configured() {
        let before = map(json!({"plan": "gold", "ltv": 10}));
        let desired = map(json!({"plan": "gold", "ltv": null}));
        let unset = row_delta(Some(&before), &desired, true);
        assert!(unset.set.is_empty());
        assert_eq!(unset.unset, vec!["ltv".to_string()]);
        assert_eq!(unset.applied, map(json!({"plan": "gold", "ltv": null})));
        let keep = row_delta(Some(&before), &desired, false);
        assert!(keep.set.is_empty() && keep.unset.is_empty() && keep.changes.is_empty());
        assert_eq!(keep.applied, before);
    }
}
