//! `profiles:` syncs: classify rows against what was last applied, then send the changes.

use std::collections::{BTreeMap, HashMap};

use std::sync::Arc;

use futures::{Stream, StreamExt};
use serde_json::{Map, Value};

use super::chunk::Chunker;
use super::diff::{self, RowHash};
use super::identify;
use super::spill::{self, Upsert, UpsertLog};
use super::table::{self, KeyTable, PackedState};
use super::{
    ProfileCounts, ProfileSyncPlan, ProfileSyncReport, RejectedRow, RowChange, SAMPLE_SIZE,
    SyncError,
};
use crate::klaviyo::{KlaviyoClient, Operation, PROFILE_MAX_BYTES};
use crate::manifest::types::{IdentifyBy, OnMissingRow, ProfileSyncSpec};
use crate::sql::{RowBatch, RowRef, SqlError};
use crate::state::{StateStore, StoredKeys, SyncRowRecord, identifier_key, short_row_hash};

const WHAT: &str = "profiles sync";
/// Changed rows looked up in the state at once.
const LOOKUP_BATCH: usize = 500;
/// Rows read back from the spill file per batch of property removals or records.
const RECORD_BATCH: usize = 10_000;

/// What a row turned out to be; kept per identifier to catch duplicates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Hash differs; waiting for its state lookup.
    Pending,
    New {
        unset: bool,
    },
    Changed {
        unset: bool,
    },
    /// Only nulls changed, nothing to send (its record is refreshed at apply).
    UnsetOnly,
    Unchanged,
    /// Seen more than once: every occurrence is rejected.
    Duplicate,
    /// Rejected for another reason after its identifier was taken.
    Rejected,
}

/// The rows klsync applied before, by identifier key: 56 bits of each stored row hash (a
/// changed row keeps its old hash with probability 2^-56, and a million entries take 16 MB
/// less than whole hashes) and, in the same slot, what the query's row turned out to be
/// (`None`: not seen yet, so far gone from the query). Keeping both in one slot costs one
/// probe and one cache miss per row.
type StoredTable = KeyTable<Option<Seen>>;

impl PackedState for Option<Seen> {
    fn pack(self) -> u8 {
        match self {
            None => 0,
            Some(Seen::Pending) => 1,
            Some(Seen::New { unset: false }) => 2,
            Some(Seen::New { unset: true }) => 3,
            Some(Seen::Changed { unset: false }) => 4,
            Some(Seen::Changed { unset: true }) => 5,
            Some(Seen::UnsetOnly) => 6,
            Some(Seen::Unchanged) => 7,
            Some(Seen::Duplicate) => 8,
            Some(Seen::Rejected) => 9,
        }
    }

    fn unpack(byte: u8) -> Self {
        Some(match byte {
            0 => return None,
            1 => Seen::Pending,
            2 => Seen::New { unset: false },
            3 => Seen::New { unset: true },
            4 => Seen::Changed { unset: false },
            5 => Seen::Changed { unset: true },
            6 => Seen::UnsetOnly,
            7 => Seen::Unchanged,
            8 => Seen::Duplicate,
            9 => Seen::Rejected,
            _ => unreachable!("the table holds only packed states"),
        })
    }
}

/// The part of a row hash the stored-hash table keeps (see [`StoredTable`]).
fn short_hash(hash: &RowHash) -> u64 {
    short_row_hash(hash) & table::VALUE_BITS
}

/// What a row's identifier met in the tables.
enum Found {
    Unchanged,
    /// Hash differs from the stored one (`stored`) or there is none.
    Differs {
        stored: bool,
        hash: RowHash,
    },
    /// The identifier was seen before, as this.
    Twin(Seen),
    /// A value of the row cannot be carried (why): the row is refused.
    Refused(String),
}

fn seen_of(stored: &StoredTable, seen: &diff::KeyMap<Seen>, key: u64) -> Option<Seen> {
    match stored.get(key) {
        Some((_, class)) => class,
        None => seen.get(&key).copied(),
    }
}

/// A row whose hash differs from the stored one (or that has none).
struct Candidate {
    key: u64,
    identifier: String,
    hash: RowHash,
    properties: Map<String, Value>,
    stored: bool,
    row: u64,
}

fn json_text(map: &Map<String, Value>) -> String {
    serde_json::to_string(map).expect("JSON maps always serialize")
}

fn json_map(text: &str) -> Map<String, Value> {
    // Written by `json_text` above, from a Map: always an object.
    serde_json::from_str(text).unwrap_or_default()
}

/// Everything an apply sends for one sync; empty when planning.
#[derive(Default)]
pub(super) struct ProfileWork {
    /// The rows to send or record, on disk ([`spill`]).
    upserts: UpsertLog,
    /// Keys of rows found twice after they were written: skipped when read back.
    duplicates: diff::KeySet,
    /// Rows gone from the query: identifier and the properties to remove.
    gone: Vec<(String, Vec<String>)>,
    /// The scheme of the rows' hashes, as they are recorded.
    scheme: diff::HashScheme,
}

struct Run<'a> {
    spec: &'a ProfileSyncSpec,
    /// The seed of every identifier key of this run.
    seed: u64,
    store: &'a StateStore,
    keep_work: bool,
    stored: StoredTable,
    /// Rows with no stored hash, by what they turned out to be.
    seen: diff::KeyMap<Seen>,
    pending: Vec<Candidate>,
    counts: ProfileCounts,
    rejected_sample: Vec<RejectedRow>,
    diff_sample: Vec<(u64, RowChange)>,
    chunker: Chunker,
    work: ProfileWork,
    /// Keys of the rows the full check found changed in Klaviyo: compared with Klaviyo's values
    /// (`live`), not with the recorded ones, whatever their hash says.
    restore: diff::KeySet,
    /// Per identifier the full check found changed, its differing properties as Klaviyo has them.
    live: HashMap<&'a str, Vec<(&'a str, Option<&'a Value>)>>,
    /// `--resync`: every row is sent again, as if nothing had been applied.
    resync: bool,
    /// Each row's stored entry, for the batch being classified (kept to reuse its memory).
    probes: Vec<Option<table::Entry>>,
}

/// A row's identifier key and hash (or why one of its values cannot be carried), or why its
/// identifier is unusable.
type Prepared = Result<(u64, Result<RowHash, String>), identify::IdentifierProblem>;

/// The first, CPU-heavy step of classifying rows: normalise each identifier, key it, hash the
/// row. Needs no stored state and no other row, so batches are identified in parallel, each by
/// its own clone, while the stored hashes load.
#[derive(Clone)]
struct Identifier {
    /// The seed of the identifier keys (the stored hashes' own: see `load_stored`).
    seed: u64,
    identify_by: IdentifyBy,
    unset_nulls: bool,
    /// Hashes rows by the sync's properties (sorted by property name, the canonical order).
    hasher: diff::RowHasher,
    /// The identifier being normalised: identifiers are kept as strings only for the few
    /// rows that differ.
    scratch: String,
    layout: Arc<Layout>,
}

impl Identifier {
    /// An identifier for rows of `layout`; its `seed` and its hasher's scheme are set once
    /// known.
    fn new(spec: &ProfileSyncSpec, layout: Layout) -> Self {
        Identifier {
            seed: 0,
            identify_by: spec.identify_by,
            unset_nulls: spec.on_missing_row == OnMissingRow::Unset,
            hasher: diff::RowHasher::new(spec.properties.keys().map(String::as_str)),
            scratch: String::new(),
            layout: Arc::new(layout),
        }
    }

    /// Each row's identifier key and hash. Values are read from the batch only where needed:
    /// hashing writes scalars straight from the row.
    fn identify(&mut self, batch: &RowBatch) -> Result<Vec<Prepared>, SqlError> {
        let layout = &*self.layout;
        let mut prepared = Vec::with_capacity(batch.len());
        for row in batch.rows() {
            let identified = match row.text(layout.identifier)? {
                Some(text) => {
                    identify::normalize_text_into(self.identify_by, text, &mut self.scratch)
                }
                None => identify::normalize(self.identify_by, &*row.value(layout.identifier)?)
                    .map(|identifier| self.scratch = identifier),
            };
            prepared.push(match identified {
                Ok(()) => {
                    let key = identifier_key(self.seed, &self.scratch);
                    // `layout.properties` is sorted by property name, as the canonical form
                    // wants.
                    let hash = match self
                        .hasher
                        .hash_row(&row, layout.properties.iter().map(|(_, column)| *column))
                    {
                        Ok(hash) => Ok(diff::mode_hash(self.hasher.scheme, hash, self.unset_nulls)),
                        // A value Klaviyo cannot hold (a NaN, JSON nested too deep, ...) is the
                        // row's problem, like a bad identifier: that row is refused and the
                        // others are synced. A column of a type klsync cannot convert at all
                        // stays an error for the whole query.
                        Err(problem @ SqlError::Decode { .. }) => Err(problem.to_string()),
                        Err(other) => return Err(other),
                    };
                    Ok((key, hash))
                }
                Err(problem) => Err(problem),
            });
        }
        Ok(prepared)
    }
}

/// A batch of query rows with each row's [`Identifier::identify`] outcome.
struct Identified {
    batch: RowBatch,
    layout: Arc<Layout>,
    prepared: Vec<Prepared>,
}

impl Identified {
    /// Memory held while it waits.
    fn memory(&self) -> usize {
        self.batch.memory() + self.prepared.capacity() * std::mem::size_of::<Prepared>()
    }
}

/// Batches identified at once (on the runtime's worker threads), in query order.
const IDENTIFYING: usize = 4;

/// The seed and scheme of the stored keys, once the first digest chunk is read (see
/// `load_stored`); an error when loading failed before that.
type SeedFuture = futures::future::Shared<tokio::sync::oneshot::Receiver<StoredKeys>>;

/// Why a batch could not be identified: the query's error, or `None` when the stored hashes
/// failed to load before their seed was known (the loader's error is the one to report).
type IdentifyError = Option<SyncError>;

/// The query's batches, identified in parallel and delivered in order. The query starts at
/// once; rows wait for `seed` only to be keyed and hashed (in the stored rows' scheme, or the
/// current one for a `resync`, whose rows are all recorded again).
fn identify_batches<'a>(
    spec: &'a ProfileSyncSpec,
    seed: SeedFuture,
    resync: bool,
    batches: impl Stream<Item = Result<RowBatch, SqlError>> + 'a,
) -> impl Stream<Item = Result<Identified, IdentifyError>> + 'a {
    let mut template: Option<Identifier> = None;
    batches
        .map(move |batch| {
            let started = batch
                .map_err(|source| query_error(spec, source))
                .and_then(|batch| {
                    if template.is_none() {
                        template = Some(Identifier::new(spec, Layout::new(spec, &batch.columns)?));
                    }
                    let mut identifier = template.clone().expect("set above");
                    let seed = seed.clone();
                    Ok(AbortOnDrop(tokio::spawn(async move {
                        let Ok(keys) = seed.await else {
                            return (batch, identifier.layout, None);
                        };
                        identifier.seed = keys.seed;
                        identifier.hasher.scheme = hash_scheme(keys, resync);
                        let prepared = identifier.identify(&batch);
                        (batch, identifier.layout, Some(prepared))
                    })))
                });
            async move {
                let mut task = started?;
                let (batch, layout, prepared) = (&mut task.0)
                    .await
                    .expect("identifying rows does not panic");
                let prepared = prepared.ok_or(None)?;
                Ok(Identified {
                    batch,
                    layout,
                    prepared: prepared.map_err(|source| query_error(spec, source))?,
                })
            }
        })
        .buffered(IDENTIFYING)
}

impl Run<'_> {
    fn reject(&mut self, row: u64, identifier: &Value, reason: String) {
        self.counts.rejected += 1;
        if self.rejected_sample.len() < SAMPLE_SIZE {
            self.rejected_sample.push(RejectedRow {
                row,
                identifier: identifier.to_string(),
                reason,
            });
        }
    }

    fn mark(&mut self, key: u64, class: Seen) {
        if !self.stored.set_state(key, Some(class)) {
            self.seen.insert(key, class);
        }
    }

    fn uncount(&mut self, seen: Seen) {
        match seen {
            Seen::New { unset } => {
                self.counts.new -= 1;
                self.counts.unset -= u64::from(unset);
            }
            Seen::Changed { unset } => {
                self.counts.changed -= 1;
                self.counts.unset -= u64::from(unset);
            }
            Seen::UnsetOnly => self.counts.unset -= 1,
            Seen::Unchanged => self.counts.unchanged -= 1,
            Seen::Pending | Seen::Duplicate | Seen::Rejected => {}
        }
    }

    /// Classify a batch of consecutive rows, the first being row `first` (1-based), by each
    /// row's identifier key and hash from [`Identifier::identify`].
    ///
    /// The probes come after all the hashing (in [`Identifier::identify`]): the probes of a
    /// batch are independent of each other, so the processor overlaps their cache misses (a
    /// million-row table does not fit in any cache) instead of waiting for each in turn;
    /// probing row by row, a no-op plan spent a quarter of its time on them.
    async fn classify(&mut self, first: u64, identified: Identified) -> Result<(), SyncError> {
        let Identified {
            batch,
            layout,
            prepared,
        } = identified;
        let layout = &*layout;
        let failed = |source| query_error(self.spec, source);
        // Touch every row's table entry in a tight loop first (see `KeyTable::touch`): the
        // classification below then finds them in cache.
        for (key, _) in prepared
            .iter()
            .filter_map(|identified| identified.as_ref().ok())
        {
            self.stored.touch(*key);
        }
        // Then every probe, in a loop of its own too: entries never move while rows are
        // classified (the table only changes states), and each probe's loads are independent.
        let mut probes = std::mem::take(&mut self.probes);
        probes.clear();
        probes.extend(prepared.iter().map(|identified| match identified {
            Ok((key, _)) => self.stored.entry(*key),
            Err(_) => None,
        }));
        for ((offset, identified), entry) in prepared.into_iter().enumerate().zip(probes.drain(..))
        {
            let index = first + offset as u64;
            match identified {
                Ok((key, hash)) => match self.found(key, entry, hash) {
                    // Most rows of most plans: settled without another call.
                    Found::Unchanged => {}
                    found => {
                        self.settle(index, &batch.row(offset), layout, key, found)
                            .await?
                    }
                },
                Err(problem) => {
                    let raw = batch.row(offset).value(layout.identifier).map_err(failed)?;
                    self.reject(index, &raw, problem.to_string());
                }
            }
        }
        self.probes = probes;
        Ok(())
    }

    /// The normalised identifier of a row whose identifier passed [`Identifier::identify`].
    fn identifier_of(&self, raw: &Value) -> String {
        identify::normalize(self.spec.identify_by, raw).unwrap_or_default()
    }

    /// What a row with identifier key `key` (at `entry` of the stored table, if there) and
    /// `hash` is, as far as the tables tell; its state is recorded, and an unchanged row
    /// counted.
    fn found(
        &mut self,
        key: u64,
        entry: Option<table::Entry>,
        hash: Result<RowHash, String>,
    ) -> Found {
        match (entry.map(|entry| (entry, self.stored.at(entry))), hash) {
            (Some((_, (_, Some(previous)))), _) => Found::Twin(previous),
            (None, _) if let Some(previous) = self.seen.get(&key).copied() => Found::Twin(previous),
            (_, Err(problem)) => Found::Refused(problem),
            (Some((entry, (stored_hash, None))), Ok(hash))
                if stored_hash == short_hash(&hash)
                    && !self.restore.contains(&key)
                    && !self.resync =>
            {
                self.stored.set_state_at(entry, Some(Seen::Unchanged));
                self.counts.unchanged += 1;
                Found::Unchanged
            }
            (Some((entry, _)), Ok(hash)) => {
                self.stored.set_state_at(entry, Some(Seen::Pending));
                Found::Differs { stored: true, hash }
            }
            (None, Ok(hash)) => {
                self.seen.insert(key, Seen::Pending);
                Found::Differs {
                    stored: false,
                    hash,
                }
            }
        }
    }

    /// The rest of classifying row `index` once [`Run::found`] said what it is.
    async fn settle(
        &mut self,
        index: u64,
        row: &RowRef<'_>,
        layout: &Layout,
        key: u64,
        found: Found,
    ) -> Result<(), SyncError> {
        match found {
            Found::Twin(previous) => {
                if previous != Seen::Duplicate {
                    self.uncount(previous);
                    if previous != Seen::Rejected {
                        // The first occurrence is rejected too, now that it has a twin.
                        self.counts.rejected += 1;
                    }
                    self.mark(key, Seen::Duplicate);
                }
                let raw = row
                    .value(layout.identifier)
                    .map_err(|source| query_error(self.spec, source))?;
                let identifier = self.identifier_of(&raw);
                self.reject(index, &raw, format!("duplicate identifier {identifier}"));
            }
            Found::Unchanged => {}
            Found::Refused(problem) => {
                // Marked, so that a stored row is not taken for one gone from the query (its
                // properties stay as they are in Klaviyo) and a twin is still caught.
                self.mark(key, Seen::Rejected);
                let raw = row
                    .value(layout.identifier)
                    .map_err(|source| query_error(self.spec, source))?;
                self.reject(index, &raw, problem);
            }
            Found::Differs { stored, hash } => {
                let properties: Map<String, Value> = layout
                    .properties
                    .iter()
                    .map(|(property, column)| {
                        let value = row.value(*column)?.into_owned();
                        Ok((property.clone(), value))
                    })
                    .collect::<Result<_, SqlError>>()
                    .map_err(|source| query_error(self.spec, source))?;
                let raw = row
                    .value(layout.identifier)
                    .map_err(|source| query_error(self.spec, source))?;
                let identifier = self.identifier_of(&raw);
                self.pending.push(Candidate {
                    key,
                    identifier,
                    hash,
                    properties,
                    stored,
                    row: index,
                });
                if self.pending.len() >= LOOKUP_BATCH {
                    self.resolve().await?;
                }
            }
        }
        Ok(())
    }

    /// Diff the pending rows against their applied values.
    async fn resolve(&mut self) -> Result<(), SyncError> {
        let batch = std::mem::take(&mut self.pending);
        let lookup: Vec<String> = batch
            .iter()
            .filter(|c| c.stored)
            .map(|c| c.identifier.clone())
            .collect();
        let applied = if lookup.is_empty() {
            HashMap::new()
        } else {
            self.store.sync_applied(&self.spec.id, &lookup).await?
        };
        let unset_nulls = self.spec.on_missing_row == OnMissingRow::Unset;
        for candidate in batch {
            if seen_of(&self.stored, &self.seen, candidate.key) == Some(Seen::Duplicate) {
                continue;
            }
            let recorded = applied
                .get(&candidate.identifier)
                .and_then(Value::as_object);
            let live;
            let before = match self.live.get(candidate.identifier.as_str()) {
                _ if self.resync => None,
                Some(changed) => {
                    live = as_in_klaviyo(recorded, changed);
                    Some(&live)
                }
                None => recorded,
            };
            let delta = diff::row_delta(before, &candidate.properties, unset_nulls);
            let unset = !delta.unset.is_empty();
            let mut size = 0;
            let seen = if !delta.set.is_empty() {
                if let Some((property, depth)) = too_deep(&delta.set) {
                    self.mark(candidate.key, Seen::Rejected);
                    self.reject(
                        candidate.row,
                        &Value::String(candidate.identifier),
                        format!(
                            "property `{property}` is nested {depth} levels deep, more than the \
                             {MAX_PROPERTY_DEPTH} klsync sends (Klaviyo's JSON parser refuses a \
                             request nested deeper than 128, and with it every profile of the \
                             import job); flatten the value in the query"
                        ),
                    );
                    continue;
                }
                size = profile_size(self.spec, &candidate.identifier, &delta.set);
                if size > PROFILE_MAX_BYTES {
                    self.mark(candidate.key, Seen::Rejected);
                    self.reject(
                        candidate.row,
                        &Value::String(candidate.identifier),
                        format!(
                            "profile is {size} bytes, over Klaviyo's limit of {PROFILE_MAX_BYTES}"
                        ),
                    );
                    continue;
                }
                self.chunker.push(size);
                // A resent row klsync had recorded counts as changed, not new.
                if before.is_some() || (self.resync && candidate.stored) {
                    self.counts.changed += 1;
                    Seen::Changed { unset }
                } else {
                    self.counts.new += 1;
                    Seen::New { unset }
                }
            } else if unset {
                Seen::UnsetOnly
            } else {
                self.counts.unchanged += 1;
                Seen::Unchanged
            };
            self.counts.unset += u64::from(unset);
            self.mark(candidate.key, seen);
            if !delta.changes.is_empty() && self.diff_sample.len() < SAMPLE_SIZE {
                let action = match seen {
                    Seen::New { .. } => "new",
                    Seen::Changed { .. } => "changed",
                    _ => "unset",
                };
                self.diff_sample.push((
                    candidate.key,
                    RowChange {
                        identifier: candidate.identifier.clone(),
                        action: action.to_string(),
                        changes: delta.changes.clone(),
                    },
                ));
            }
            if self.keep_work {
                self.work
                    .upserts
                    .push(&Upsert {
                        key: candidate.key,
                        identifier: candidate.identifier,
                        row_hash: candidate.hash,
                        set: (!delta.set.is_empty()).then(|| json_text(&delta.set)),
                        size,
                        unset: delta.unset,
                        applied: json_text(&delta.applied),
                    })
                    .map_err(SyncError::Spill)?;
            }
        }
        Ok(())
    }

    /// Rows klsync applied that the query no longer returns.
    async fn gone(&mut self) -> Result<(), SyncError> {
        let gone = self.stored.states().filter(Option::is_none).count();
        if gone == 0 {
            return Ok(());
        }
        if self.spec.on_missing_row == OnMissingRow::Keep {
            self.counts.missing_kept = gone as u64;
            return Ok(());
        }
        let mut identifiers = Vec::with_capacity(gone);
        let stored = &self.stored;
        self.store
            .visit_sync_row_hashes(&self.spec.id, |identifier, _, _| {
                let key = identifier_key(self.seed, identifier);
                if stored.get(key).is_some_and(|(_, seen)| seen.is_none()) {
                    identifiers.push(identifier.to_string());
                }
            })
            .await?;
        for batch in identifiers.chunks(LOOKUP_BATCH) {
            let applied = self.store.sync_applied(&self.spec.id, batch).await?;
            for identifier in batch {
                let keys: Vec<String> = applied
                    .get(identifier)
                    .and_then(Value::as_object)
                    .map(|applied| {
                        applied
                            .iter()
                            .filter(|(_, value)| !value.is_null())
                            .map(|(key, _)| key.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                if !keys.is_empty() {
                    self.counts.unset += 1;
                    if self.diff_sample.len() < SAMPLE_SIZE {
                        let before = applied.get(identifier).and_then(Value::as_object);
                        self.diff_sample.push((
                            0,
                            RowChange {
                                identifier: identifier.clone(),
                                action: "unset".to_string(),
                                changes: keys
                                    .iter()
                                    .map(|key| super::FieldChange {
                                        property: key.clone(),
                                        before: before.and_then(|b| b.get(key)).cloned(),
                                        after: None,
                                    })
                                    .collect(),
                            },
                        ));
                    }
                }
                if self.keep_work {
                    self.work.gone.push((identifier.clone(), keys));
                }
            }
        }
        Ok(())
    }
}

/// A row's recorded properties with those the full check found changed in Klaviyo replaced by
/// Klaviyo's values (removed where Klaviyo has none).
fn as_in_klaviyo(
    recorded: Option<&Map<String, Value>>,
    changed: &[(&str, Option<&Value>)],
) -> Map<String, Value> {
    let mut properties = recorded.cloned().unwrap_or_default();
    for (property, live) in changed {
        match live {
            Some(value) => properties.insert((*property).to_string(), (*value).clone()),
            None => properties.remove(*property),
        };
    }
    properties
}

/// Where a sync finds its columns in the query's rows.
struct Layout {
    /// The identifier column's position.
    identifier: usize,
    /// Property name and column position, sorted by property name (the canonical order).
    properties: Vec<(String, usize)>,
}

impl Layout {
    fn new(spec: &ProfileSyncSpec, columns: &[String]) -> Result<Layout, SyncError> {
        let position = |column: &String| {
            columns
                .iter()
                .position(|c| c == column)
                .ok_or_else(|| SyncError::MissingColumn {
                    what: WHAT,
                    name: spec.id.clone(),
                    query: spec.query.clone(),
                    column: column.clone(),
                    available: columns.join(", "),
                })
        };
        let id_column = super::identifier_field(spec.identify_by).to_string();
        Ok(Layout {
            identifier: position(&id_column)?,
            properties: spec
                .properties
                .iter()
                .map(|(property, column)| Ok((property.clone(), position(column)?)))
                .collect::<Result<_, SyncError>>()?,
        })
    }
}

/// How deep a property value may nest (an array or object counts one level per bracket). A
/// bulk import request puts property values 8 levels down, and a request nested deeper than 128
/// levels is refused whole by serde_json's default limit (the emulator's, and the usual one of
/// JSON parsers): one deep value would fail every profile of its job. 100 leaves room.
pub(crate) const MAX_PROPERTY_DEPTH: usize = 100;

/// The first property (by name) whose value nests deeper than [`MAX_PROPERTY_DEPTH`], with its
/// depth.
fn too_deep(set: &Map<String, Value>) -> Option<(&str, usize)> {
    set.iter()
        .map(|(property, value)| (property.as_str(), json_depth(value)))
        .find(|(_, depth)| *depth > MAX_PROPERTY_DEPTH)
}

/// Nesting depth of a JSON value: 0 for a scalar, 1 for `[]` or `[1]`, 2 for `[[1]]`.
/// Iterative, so no value can exhaust the stack.
fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 0)];
    while let Some((value, depth)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        pending.extend(children.map(|child| (child, depth + 1)));
    }
    deepest
}

fn profile_size(spec: &ProfileSyncSpec, identifier: &str, set: &Map<String, Value>) -> usize {
    let attributes = super::attributes_for(spec.identify_by, identifier, Some(set.clone()));
    serde_json::to_vec(&crate::klaviyo::types::profile_upsert_object(&attributes))
        .map_or(usize::MAX, |bytes| bytes.len())
}

/// Memory for query batches taken while the stored hashes load: past it the reader waits (and
/// PostgreSQL with it) until the table is ready. At least [`EARLY_BYTES_MIN`], and
/// [`EARLY_BYTES_PER_ENTRY`] per stored entry beyond that, so the buffer grows with the load it
/// waits for and stays a fraction of the table's own memory (16 bytes and more per entry).
///
/// Why it scales: a million entries load in 15-70 ms, before the query's first rows even
/// arrive, and a buffer of 32 MB there cost more in fresh memory (page faults, what a plan pays
/// most for on the virtual machines it runs on) than the wait it saved. Ten million load in
/// 0.1-0.5 s, while PostgreSQL could stream a million rows or more: with a fixed 4 MB the
/// second core sat idle through the load (profiled), and a 10,000,000-row no-op plan took 7%
/// longer than with 8 bytes per entry (docs/BENCHMARKS.md).
fn early_bytes(stored_entries: usize) -> usize {
    EARLY_BYTES_MIN.max(stored_entries.saturating_mul(EARLY_BYTES_PER_ENTRY))
}

/// See [`early_bytes`].
const EARLY_BYTES_MIN: usize = 4 << 20;

/// See [`early_bytes`].
const EARLY_BYTES_PER_ENTRY: usize = 8;

/// The stored row hashes of a sync, in a table sized once for `size` entries (the digest's count;
/// it grows when there is no digest). `seed` gets the seed of the table's keys as soon as it is
/// known, before the entries: the query's rows are keyed with it meanwhile.
async fn load_stored(
    store: StateStore,
    sync_id: String,
    size: usize,
    seed: tokio::sync::oneshot::Sender<StoredKeys>,
) -> Result<StoredTable, SyncError> {
    /// Entries inserted at once (see `KeyTable::insert_all`).
    const INSERT_BATCH: usize = 2048;
    let started = std::time::Instant::now();
    let mut table = StoredTable::with_capacity(size);
    let mut entries = Vec::with_capacity(INSERT_BATCH);
    store
        .visit_sync_row_keys(
            &sync_id,
            |known| {
                // The receiver is gone only when the plan is: nothing to tell.
                let _ = seed.send(known);
            },
            |key, short| {
                entries.push((key, short));
                if entries.len() == INSERT_BATCH {
                    table.insert_all(&entries);
                    entries.clear();
                }
            },
        )
        .await?;
    table.insert_all(&entries);
    tracing::debug!(
        sync = sync_id,
        entries = table.len(),
        elapsed = ?started.elapsed(),
        "stored row hashes loaded"
    );
    Ok(table)
}

/// The scheme a plan hashes rows with: the stored rows' (their hashes are compared), or the
/// current one when every row is sent and recorded again anyway (`--resync`: how a sync
/// recorded under an older scheme moves to the current one).
fn hash_scheme(stored: StoredKeys, resync: bool) -> diff::HashScheme {
    if resync {
        diff::HashScheme::CURRENT
    } else {
        stored.scheme
    }
}

/// The error of a load that ended before telling its seed.
async fn load_error(load: &mut AbortOnDrop<Result<StoredTable, SyncError>>) -> SyncError {
    match (&mut load.0)
        .await
        .expect("loading stored hashes does not panic")
    {
        Err(err) => err,
        Ok(_) => unreachable!("the seed is known before the stored hashes are loaded"),
    }
}

/// A task that is cancelled when its handle goes (a plan that fails stops loading too).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A failure reading the sync's query (or one of its values).
fn query_error(spec: &ProfileSyncSpec, source: SqlError) -> SyncError {
    SyncError::query(WHAT, &spec.id, &spec.query, source)
}

/// Stream the sync's query and classify every row. With `keep_work`, also return what to send.
/// With `check` (the full check's findings for this sync), rows it found changed in Klaviyo
/// are compared with Klaviyo's values, so they are planned (and sent) as changed.
pub(super) async fn compute(
    spec: &ProfileSyncSpec,
    sources: super::Sources<'_>,
    keep_work: bool,
    check: Option<&super::ProfileCheck>,
    resync: bool,
) -> Result<(ProfileSyncPlan, ProfileWork, BTreeMap<Operation, u64>), SyncError> {
    let super::Sources { queries, store, .. } = sources;
    let query = sources.resolve(WHAT, &spec.id, &spec.query).await?;
    // Bare rows in batches: a million-row query builds no map per row. The query starts while
    // the stored hashes load, and its first batches wait in memory, so neither waits for the
    // other.
    // The stored hashes load on a task of their own: filling the table is CPU work in bursts
    // of a digest chunk, and meanwhile the first batches are identified (the hashing is most of
    // the work and needs no stored hash), so the query's reader does not stall. Rows are keyed
    // with the stored keys' seed, known after the first digest chunk.
    let (seed_sender, seed) = tokio::sync::oneshot::channel();
    let seed = futures::FutureExt::shared(seed);
    let stored_entries = store.sync_digest_entries(&spec.id).await?.unwrap_or(0);
    let early_limit = early_bytes(stored_entries);
    let mut load = AbortOnDrop(tokio::spawn(load_stored(
        store.clone(),
        spec.id.clone(),
        stored_entries,
        seed_sender,
    )));
    let mut batches = std::pin::pin!(identify_batches(
        spec,
        seed.clone(),
        resync,
        queries.execute_query_batches(&query.sql, &query.params)
    ));
    let mut early = std::collections::VecDeque::new();
    let mut buffered_bytes = 0;
    let mut ended = false;
    let stored = loop {
        tokio::select! {
            biased;
            stored = &mut load.0 => break stored.expect("loading stored hashes does not panic")?,
            item = batches.next(), if !ended && buffered_bytes < early_limit => match item {
                Some(identified) => {
                    let identified = match identified {
                        Ok(identified) => identified,
                        Err(Some(err)) => return Err(err),
                        Err(None) => return Err(load_error(&mut load).await),
                    };
                    buffered_bytes += identified.memory();
                    early.push_back(identified);
                }
                None => ended = true,
            },
        }
    };
    tracing::debug!(
        sync = spec.id,
        buffered_bytes,
        buffered_batches = early.len(),
        query_ended = ended,
        "rows read while the stored row hashes loaded"
    );
    let keys = seed
        .await
        .expect("the seed is known before the stored hashes are loaded");
    let seed = keys.seed;
    let seen = diff::KeyMap::default();
    let live = check
        .map(super::ProfileCheck::live_values)
        .unwrap_or_default();
    let restore = live
        .keys()
        .map(|identifier| identifier_key(seed, identifier))
        .collect();
    let mut run = Run {
        spec,
        seed,
        store,
        keep_work,
        stored,
        seen,
        pending: Vec::new(),
        counts: ProfileCounts::default(),
        rejected_sample: Vec::new(),
        diff_sample: Vec::new(),
        chunker: Chunker::default(),
        work: ProfileWork {
            scheme: hash_scheme(keys, resync),
            ..ProfileWork::default()
        },
        restore,
        live,
        resync,
        probes: Vec::new(),
    };
    let mut index = 0u64;
    for identified in early {
        let rows = identified.batch.len() as u64;
        run.classify(index + 1, identified).await?;
        index += rows;
    }
    while let Some(identified) = batches.next().await {
        let identified = identified.map_err(|err| err.expect("the stored hashes are loaded"))?;
        let rows = identified.batch.len() as u64;
        run.classify(index + 1, identified).await?;
        index += rows;
    }
    run.resolve().await?;
    run.gone().await?;
    let (stored, seen) = (&run.stored, &run.seen);
    let diff_sample = run
        .diff_sample
        .into_iter()
        .filter(|(key, _)| *key == 0 || seen_of(stored, seen, *key) != Some(Seen::Duplicate))
        .map(|(_, change)| change)
        .collect();
    run.work.upserts.finish().map_err(SyncError::Spill)?;
    // A row found twice is refused, both times; the first was written before the second was
    // seen. One more pass over the file finds them, only when there are any.
    let any_duplicate = stored.states().any(|state| state == Some(Seen::Duplicate))
        || seen.values().any(|state| *state == Seen::Duplicate);
    if any_duplicate {
        for row in run.work.upserts.read_from(0).map_err(SyncError::Spill)? {
            let (_, upsert) = row.map_err(SyncError::Spill)?;
            if seen_of(stored, seen, upsert.key) == Some(Seen::Duplicate) {
                run.work.duplicates.insert(upsert.key);
            }
        }
    }
    let jobs = run.chunker.jobs() as u64;
    let requests = super::requests_of([
        (Operation::BulkImportProfiles, jobs),
        (Operation::GetBulkImportProfilesJob, jobs),
        (Operation::CreateOrUpdateProfile, run.counts.unset),
    ]);
    let plan = ProfileSyncPlan {
        id: spec.id.clone(),
        query: spec.query.clone(),
        identify_by: spec.identify_by,
        on_missing_row: spec.on_missing_row,
        rows: index,
        counts: run.counts,
        rejected_sample: run.rejected_sample,
        diff_sample,
        requests: super::request_names(&requests),
        estimated_seconds: super::seconds(&requests),
        drift: Vec::new(),
        check: check.cloned(),
        resync,
    };
    Ok((plan, run.work, requests))
}

/// Send one sync's work and record what Klaviyo accepted.
pub(super) async fn apply(
    spec: &ProfileSyncSpec,
    work: ProfileWork,
    client: &KlaviyoClient,
    store: &StateStore,
) -> Result<ProfileSyncReport, SyncError> {
    let mut report = ProfileSyncReport {
        id: spec.id.clone(),
        ..ProfileSyncReport::default()
    };
    let mut failed: BTreeMap<String, String> = BTreeMap::new();

    let log = &work.upserts;
    let wanted = |upsert: &Upsert| !work.duplicates.contains(&upsert.key);
    let rows = |from| -> Result<_, SyncError> {
        Ok(log
            .read_from(from)
            .map_err(SyncError::Spill)?
            .map(|row| row.map_err(SyncError::Spill))
            .filter(|row| row.as_ref().map_or(true, |(_, upsert)| wanted(upsert))))
    };

    // 1. Bulk import every row with values to set. One pass over the file finds where each
    // job starts; a job's rows are read back only when it is built.
    let mut chunker = Chunker::default();
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    let mut starts: Vec<spill::Offset> = Vec::new();
    let mut sendable = 0;
    for row in rows(0)? {
        let (at, upsert) = row?;
        if upsert.set.is_none() {
            continue;
        }
        if chunker.push(upsert.size) {
            ranges.push(sendable..sendable + 1);
            starts.push(at);
        } else if let Some(last) = ranges.last_mut() {
            last.end = sendable + 1;
        }
        sendable += 1;
    }
    report.sent = sendable as u64;
    // Each job's attributes are built only when it is sent (and again if Klaviyo refuses some).
    let read_range = |range: std::ops::Range<usize>| -> Result<Vec<Upsert>, SyncError> {
        let job = ranges.partition_point(|r| r.start <= range.start) - 1;
        let skip = range.start - ranges[job].start;
        let mut taken = Vec::with_capacity(range.len());
        for row in rows(starts[job])? {
            let (_, upsert) = row?;
            if upsert.set.is_some() {
                taken.push(upsert);
                if taken.len() == skip + range.len() {
                    break;
                }
            }
        }
        Ok(taken.split_off(skip.min(taken.len())))
    };
    let build = |range: std::ops::Range<usize>| {
        read_range(range).map(|upserts| {
            upserts
                .into_iter()
                .map(|u| {
                    let set = u.set.as_deref().map(json_map);
                    super::attributes_for(spec.identify_by, &u.identifier, set)
                })
                .collect()
        })
    };
    // A job's accepted rows with nothing to remove are recorded as soon as it is done, by a
    // recorder beside the jobs: recording (tens of microseconds a row in SQLite) then hides
    // under the pacing of the jobs still to send instead of following the last one.
    let record_of = |upsert: Upsert| SyncRowRecord {
        identifier: upsert.identifier,
        row_hash: diff::hash_text(work.scheme, &upsert.row_hash),
        applied: Value::Object(json_map(&upsert.applied)),
    };
    let (records_tx, mut records_rx) = tokio::sync::mpsc::channel::<Vec<SyncRowRecord>>(2);
    let sending = async {
        let mut outcomes = std::pin::pin!(super::job_outcomes(
            client,
            &build,
            &ranges,
            &[],
            spec.identify_by,
            None
        ));
        let mut index = 0;
        while let Some(outcome) = outcomes.next().await {
            let range = ranges[index].clone();
            index += 1;
            let reason = match outcome {
                super::JobOutcome::Finished { job_ids, refused } => {
                    report.jobs.extend(job_ids);
                    let records: Vec<SyncRowRecord> = read_range(range)?
                        .into_iter()
                        .filter(|u| u.unset.is_empty() && !refused.contains_key(&u.identifier))
                        .map(record_of)
                        .collect();
                    failed.extend(refused);
                    if records_tx.send(records).await.is_err() {
                        // The recorder stopped on an error, which it returns.
                        break;
                    }
                    continue;
                }
                super::JobOutcome::NotSent(error) => error.to_string(),
                super::JobOutcome::Unknown { job_ids, error } => {
                    report.jobs.extend(job_ids);
                    error.to_string()
                }
            };
            for upsert in read_range(range)? {
                failed.insert(upsert.identifier, reason.clone());
            }
        }
        drop(records_tx);
        Ok::<_, SyncError>(())
    };
    let recording = async {
        let mut recorded = 0;
        while let Some(records) = records_rx.recv().await {
            store.record_sync_rows(&spec.id, &records).await?;
            recorded += records.len() as u64;
        }
        Ok::<_, SyncError>(recorded)
    };
    let (sent, recorded) = tokio::join!(sending, recording);
    report.recorded += recorded?;
    sent?;

    // 2. Remove properties (nulls), for rows whose values (if any) were accepted, a batch at a
    // time.
    let mut batch: Vec<(String, Vec<String>)> = Vec::new();
    let mut pass = rows(0)?;
    loop {
        let next = pass.next().transpose()?;
        let done = next.is_none();
        if let Some((_, upsert)) = next {
            if !upsert.unset.is_empty() && !failed.contains_key(&upsert.identifier) {
                batch.push((upsert.identifier, upsert.unset));
            }
            if batch.len() < RECORD_BATCH {
                continue;
            }
        }
        let outcomes = unset_all(
            spec,
            client,
            batch
                .iter()
                .map(|(identifier, keys)| (identifier.as_str(), keys.as_slice())),
        )
        .await;
        for ((identifier, _), outcome) in batch.drain(..).zip(outcomes) {
            match outcome {
                Ok(()) => report.unset += 1,
                Err(error) => {
                    failed.insert(identifier, error.to_string());
                }
            }
        }
        if done {
            break;
        }
    }

    // 3. Record the other accepted rows (those with properties removed, and those with nothing
    // to send), a batch at a time (a row recorded is a row the next plan need not send; one
    // killed between batches sends the rest again).
    let mut records: Vec<SyncRowRecord> = Vec::new();
    let mut pass = rows(0)?;
    loop {
        let next = pass.next().transpose()?;
        let done = next.is_none();
        if let Some((_, upsert)) = next {
            let recorded_with_its_job = upsert.set.is_some() && upsert.unset.is_empty();
            if !recorded_with_its_job && !failed.contains_key(&upsert.identifier) {
                records.push(record_of(upsert));
            }
            if records.len() < RECORD_BATCH {
                continue;
            }
        }
        store.record_sync_rows(&spec.id, &records).await?;
        report.recorded += records.len() as u64;
        records.clear();
        if done {
            break;
        }
    }

    // 4. Rows gone from the query (on_missing_row: unset): remove their properties, forget them.
    let with_keys: Vec<&(String, Vec<String>)> = work
        .gone
        .iter()
        .filter(|(_, keys)| !keys.is_empty())
        .collect();
    let gone_outcomes = unset_all(
        spec,
        client,
        with_keys
            .iter()
            .map(|(identifier, keys)| (identifier.as_str(), keys.as_slice())),
    )
    .await;
    let mut forget: Vec<String> = work
        .gone
        .iter()
        .filter(|(_, keys)| keys.is_empty())
        .map(|(identifier, _)| identifier.clone())
        .collect();
    for ((identifier, _), outcome) in with_keys.iter().zip(gone_outcomes) {
        match outcome {
            Ok(()) => {
                report.unset += 1;
                forget.push(identifier.clone());
            }
            Err(error) => {
                failed.insert(identifier.clone(), error.to_string());
            }
        }
    }
    store.forget_sync_rows(&spec.id, &forget).await?;
    // What the next plan reads instead of every recorded row.
    store.refresh_sync_digest(&spec.id).await?;

    report.failed = failed.len() as u64;
    report.failed_sample = super::failed_sample(failed);
    Ok(report)
}

/// One `profile-import` with `patch_properties.unset` per profile, a few in flight.
async fn unset_all<'a>(
    spec: &ProfileSyncSpec,
    client: &KlaviyoClient,
    profiles: impl Iterator<Item = (&'a str, &'a [String])>,
) -> Vec<Result<(), SyncError>> {
    futures::stream::iter(profiles)
        .map(|(identifier, keys)| async move {
            let attributes = super::attributes_for(spec.identify_by, identifier, None);
            client
                .upsert_profile_unset(&attributes, keys)
                .await
                .map(drop)
                .map_err(SyncError::from)
        })
        .buffered(super::UNSETS_IN_FLIGHT)
        .collect()
        .await
}

/// Live values of the sampled profiles that differ from what klsync last applied: the full
/// check's comparison ([`super::check`]) on the diff sample only.
pub(super) async fn drift(
    sync: &ProfileSyncPlan,
    store: &StateStore,
    client: &KlaviyoClient,
) -> Result<Vec<super::Drift>, SyncError> {
    let identifiers: Vec<String> = sync
        .diff_sample
        .iter()
        .map(|change| change.identifier.clone())
        .collect();
    if identifiers.is_empty() {
        return Ok(Vec::new());
    }
    let applied = store.sync_applied(&sync.id, &identifiers).await?;
    let live = super::check::live_properties(client, sync.identify_by, &identifiers).await?;
    Ok(identifiers
        .iter()
        .filter_map(|identifier| {
            let applied = applied.get(identifier)?;
            Some(super::check::property_drift(
                identifier,
                applied,
                live.get(identifier),
            ))
        })
        .flatten()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_state_survives_packing_into_its_slot() {
        let states = [
            None,
            Some(Seen::Pending),
            Some(Seen::New { unset: false }),
            Some(Seen::New { unset: true }),
            Some(Seen::Changed { unset: false }),
            Some(Seen::Changed { unset: true }),
            Some(Seen::UnsetOnly),
            Some(Seen::Unchanged),
            Some(Seen::Duplicate),
            Some(Seen::Rejected),
        ];
        let bytes: std::collections::BTreeSet<u8> = states.iter().map(|s| s.pack()).collect();
        assert_eq!(bytes.len(), states.len(), "one byte per state");
        assert_eq!(Option::<Seen>::default().pack(), 0, "a new entry is unseen");
        for state in states {
            assert_eq!(Option::<Seen>::unpack(state.pack()), state);
        }
        // The table compares short hashes with the stored value's kept bits.
        let hash: RowHash = [0xab; 16];
        assert_eq!(short_hash(&hash) & !table::VALUE_BITS, 0);
    }

    #[test]
    fn depth_counts_brackets_and_the_first_too_deep_property_is_named() {
        use serde_json::json;
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!([])), 1);
        assert_eq!(json_depth(&json!({"a": [1, {"b": [2]}]})), 4);
        let nest = |depth: usize| {
            let mut value = json!(1);
            for _ in 0..depth {
                value = json!([value]);
            }
            value
        };
        let set = |depth: usize| -> Map<String, Value> {
            [
                ("a".to_owned(), json!("flat")),
                ("b".to_owned(), nest(depth)),
            ]
            .into_iter()
            .collect()
        };
        assert_eq!(too_deep(&set(MAX_PROPERTY_DEPTH)), None);
        assert_eq!(
            too_deep(&set(MAX_PROPERTY_DEPTH + 1)),
            Some(("b", MAX_PROPERTY_DEPTH + 1))
        );
    }
}
