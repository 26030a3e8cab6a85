//! Sends a plan's changes to Klaviyo in plan order, journaling each one.
//!
//! Per change: journal it as started, send it, record the resource as managed (or forget it, on
//! a destroy), then close the journal entry. A change whose dependency failed is skipped; every
//! other change still runs, so one bad segment does not hold back unrelated lists.
//!
//! Tag links are sent as the plan's cost estimate counts them: one request per tag, target kind
//! and direction, carrying every list or segment. Each link keeps its own journal entry.
//!
//! A list's or segment's managed row records the tags klsync linked to it (`tags` of its
//! `applied` value): the plan's value when the resource itself changes, then updated by each
//! attach and detach that succeeds, and by each tag klsync deletes (Klaviyo drops its links).
//!
//! Each resource's managed row also records what Klaviyo returned for the fields klsync compares
//! (`returned`, the other half of the three-way comparison: see [`crate::plan::three_way`]): the
//! fields of Klaviyo's answer to the write, and for fields the change did not write, the values
//! the plan saw (`expected`). A written field the answer does not carry is left out, so the next
//! plan compares it directly; a segment answered without its definition is read back once.
//!
//! Ids of resources created during the run reach the changes that need them (a tag in a new
//! group, a link to a new list) through a map from address to Klaviyo id, seeded with the ids
//! klsync already manages.
//!
//! A stop ([`crate::interrupt`]: Ctrl-C, SIGTERM, the apply lock lost) ends the run between two
//! changes: nothing after it is journaled or sent. A change the stop catches half-way (a
//! replace whose create was refused) is journaled as failed with the client's `interrupted`
//! error, since its request was never sent.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::watch;

use super::write::KlaviyoWrite;
use crate::klaviyo::observe::{live_list, live_segment, live_tag_group, opt_in_to_api};
use crate::klaviyo::{ApiError, KlaviyoClient, SegmentUpdate};
use crate::model::{LiveState, LiveTag, ResourceKey, ResourceKind};
use crate::plan::{
    Action, Change, NewResource, Payload, Plan, ResourceEdit, live_fields, record_link, references,
    schedule,
};
use crate::state::{ManagedRow, RunId, StateError, StateStore};

/// What happened to one change, for progress output.
#[derive(Debug)]
pub enum Event {
    /// The change was made; `id` is the Klaviyo id it acted on or created.
    Done {
        /// The change's address.
        address: String,
        /// Its action.
        action: Action,
        /// The Klaviyo id.
        id: Option<String>,
    },
    /// The change failed or was skipped.
    Failed(Failure),
}

impl Event {
    /// The address of the change it reports.
    pub fn address(&self) -> &str {
        match self {
            Event::Done { address, .. } => address,
            Event::Failed(failure) => &failure.address,
        }
    }
}

/// A change that did not happen, and why.
#[derive(Debug)]
pub struct Failure {
    /// The change's address.
    pub address: String,
    /// Its action.
    pub action: Action,
    /// Why; its text is what progress, the summary and the journal show.
    pub cause: FailureCause,
}

impl Failure {
    /// It was not attempted: a change it depends on did not happen, or the run could send
    /// nothing more.
    pub fn skipped(&self) -> bool {
        matches!(
            self.cause,
            FailureCause::Blocked { .. } | FailureCause::NotAttempted(_) | FailureCause::Stopped
        )
    }
}

/// Why a change did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FailureCause {
    /// Klaviyo refused the request, or it could not be sent (the client's `interrupted` error
    /// when a stop caught the change half-way). Shared, because the links sent in one request
    /// fail together, with one error.
    #[error("{0}")]
    Api(#[source] Arc<ApiError>),
    /// A change it depends on did not happen.
    #[error("skipped: {by} did not happen")]
    Blocked {
        /// That change's address.
        by: String,
    },
    /// Nothing more could be sent (Klaviyo stopped answering, the run's deadline passed); the
    /// first change not attempted carries the cause.
    #[error("not attempted: {0}")]
    NotAttempted(#[source] ApiError),
    /// Nothing more could be sent, for the cause reported with an earlier change.
    #[error("not attempted: the run stopped (cause above)")]
    Stopped,
    /// A resource it acts on has no Klaviyo id: neither the plan nor this run gave it one.
    #[error("{address} has no Klaviyo id")]
    NoKlaviyoId {
        /// That resource's address.
        address: String,
    },
    /// A link's tag or target has no Klaviyo id.
    #[error("the tag or its target has no Klaviyo id")]
    UnresolvedLink,
    /// The change is not what its action needs (a resource change without its resource, its
    /// payload or a link change without its link): not a plan `klsync plan` makes.
    #[error("{0}")]
    Malformed(String),
    /// A segment definition names a list this run should have created, and has no id for.
    #[error("{0}")]
    References(String),
}

impl From<ApiError> for FailureCause {
    fn from(err: ApiError) -> Self {
        FailureCause::Api(Arc::new(err))
    }
}

/// The outcome of executing a plan.
#[derive(Debug, Default)]
pub struct ExecutionReport {
    /// Addresses of the changes made, in order.
    pub succeeded: Vec<String>,
    /// Changes that failed or were skipped, in order.
    pub failed: Vec<Failure>,
    /// The run was stopped before every change was tried; how many were not.
    pub not_started: Option<usize>,
}

/// How a configuration change of this run ended, as the data syncs running beside it see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Made; the Klaviyo id it acted on or created, when it has one.
    Done(Option<String>),
    /// Failed, or skipped.
    NotDone,
}

/// The changes of a run that have ended so far (address → outcome), published as they end so
/// that work waiting on one (the members of a list this run creates) starts at once; `finished`
/// once the run has ended, so that nothing waits for a change that never ran.
#[derive(Debug, Clone, Default)]
pub struct Settled {
    /// Address → how its change ended.
    pub outcomes: BTreeMap<String, Outcome>,
    /// The run has ended.
    pub finished: bool,
}

/// Wait until the change at `address` has ended: the id it acted on if it was made; `None` if
/// it failed, was skipped, or the run ended without it.
pub async fn wait_for(settled: &mut watch::Receiver<Settled>, address: &str) -> Option<String> {
    let seen = settled
        .wait_for(|now| now.finished || now.outcomes.contains_key(address))
        .await
        .ok()?;
    match seen.outcomes.get(address) {
        Some(Outcome::Done(id)) => id.clone(),
        _ => None,
    }
}

/// What the executor knows of the managed resources, kept current as changes end.
#[derive(Debug, Default)]
struct Book {
    /// Address → Klaviyo id of every resource known to exist.
    ids: BTreeMap<String, String>,
    /// Address → the `applied` value recorded for each managed resource, kept current so that
    /// attaches and detaches can update a list's or segment's recorded `tags`.
    applied: BTreeMap<String, Value>,
    /// Address → what Klaviyo returned, recorded beside `applied` (kept when a link updates it).
    returned: BTreeMap<String, Option<Value>>,
}

/// Executes plans against one account and state database.
///
/// # Order and concurrency
/// A plan runs in four phases, each after the one before: creates, updates, replaces and
/// adoptions; detaches; attaches; destroys. Within the first three, each kind of resource (tag
/// groups, tags, lists, segments; links to lists, links to segments) has its own lane: a lane
/// sends its changes one at a time in plan order, the lanes run side by side, and a change
/// waits for the changes it depends on (a tag for its new group, a segment for a list it names)
/// in the other lanes. So a slow bucket (segments: 1 a second) does not hold back the lists,
/// and the rate limits, not the order, set the pace. Destroys run one at a time in plan order.
/// Progress is reported, and the report kept, in plan order whatever order the lanes end in.
///
/// It sends through a [`KlaviyoWrite`]: the Klaviyo client, or in tests an in-memory fake.
pub struct Executor<'a, C: KlaviyoWrite = KlaviyoClient> {
    client: &'a C,
    store: &'a StateStore,
    run_id: RunId,
    book: Mutex<Book>,
    /// Held while a lane writes to the state (see [`Executor::write`]), and while a managed row
    /// is read, changed and written, so that two lanes changing the same row (a list's recorded
    /// tags) do not lose one change.
    recording: tokio::sync::Mutex<()>,
    /// Addresses an interrupted run may already have created.
    resumed: BTreeSet<String>,
    settled: watch::Sender<Settled>,
}

/// One request's worth of changes: one change, or the links sharing one link request.
#[derive(Debug)]
struct Unit {
    /// Indices of its changes in the plan.
    changes: Vec<usize>,
    /// It is a link request.
    link: bool,
    /// Addresses of changes earlier in the plan that it must wait for.
    waits_for: Vec<String>,
}

/// The plan's units, by phase then lane, each lane in plan order.
fn lanes(plan: &Plan) -> BTreeMap<u8, BTreeMap<u8, Vec<Unit>>> {
    let position: BTreeMap<&str, usize> = plan
        .changes
        .iter()
        .enumerate()
        .map(|(index, change)| (change.address.as_str(), index))
        .collect();
    let mut taken = vec![false; plan.changes.len()];
    let mut phases: BTreeMap<u8, BTreeMap<u8, Vec<Unit>>> = BTreeMap::new();
    for (index, change) in plan.changes.iter().enumerate() {
        if taken[index] {
            continue;
        }
        let changes: Vec<usize> = match &change.link {
            // Every link sharing this request, from here on (they sit together in the plan).
            Some(link) => plan
                .changes
                .iter()
                .enumerate()
                .skip(index)
                .filter(|(_, other)| {
                    other.action == change.action
                        && other.link.as_ref().is_some_and(|other| {
                            other.tag == link.tag && other.target.kind == link.target.kind
                        })
                })
                .map(|(i, _)| i)
                .collect(),
            None => vec![index],
        };
        for &i in &changes {
            taken[i] = true;
        }
        // Only what comes earlier in the plan is waited for, so no two lanes wait on each
        // other; the plan puts what a change needs before it. A new tag also waits for any
        // change of its group (an adoption records the id it is created in), which the plan
        // does not list as a dependency when the group already exists.
        let waits_for: BTreeSet<String> = changes
            .iter()
            .flat_map(|&i| {
                let change = &plan.changes[i];
                let group = new_tag_group(change)
                    .map(|group| ResourceKey::new(ResourceKind::TagGroup, group).address());
                change.depends_on.iter().cloned().chain(group)
            })
            .filter(|address| position.get(address.as_str()).is_some_and(|&at| at < index))
            .collect();
        let (phase, lane) = schedule::slot(change);
        phases
            .entry(phase)
            .or_default()
            .entry(lane)
            .or_default()
            .push(Unit {
                changes,
                link: change.link.is_some(),
                waits_for: waits_for.into_iter().collect(),
            });
    }
    phases
}

/// One execution's shared record: what has ended, and the progress and report in plan order.
struct Run<'p> {
    plan: &'p Plan,
    /// Addresses of changes that did not happen.
    not_done: RefCell<BTreeSet<String>>,
    /// Failure reasons so far, in the order they happened.
    reasons: RefCell<Vec<String>>,
    /// Events not yet reported, by plan index; reported once every earlier change is.
    pending: RefCell<BTreeMap<usize, Event>>,
    next: Cell<usize>,
    ended: Cell<usize>,
    report: RefCell<ExecutionReport>,
    progress: RefCell<&'p mut dyn FnMut(&Event)>,
}

impl Run<'_> {
    /// Report every event whose predecessors have all been reported; with `all`, the rest too
    /// (changes a stop kept from running leave gaps).
    fn release(&self, all: bool) {
        let mut pending = self.pending.borrow_mut();
        loop {
            let key = if all {
                pending.keys().next().copied()
            } else {
                Some(self.next.get()).filter(|next| pending.contains_key(next))
            };
            let Some(index) = key else { break };
            let Some(event) = pending.remove(&index) else {
                break;
            };
            self.next.set(index + 1);
            (self.progress.borrow_mut())(&event);
            record(&mut self.report.borrow_mut(), event);
        }
    }
}

impl<'a, C: KlaviyoWrite> Executor<'a, C> {
    /// An executor for run `run_id` (which holds the apply lock). `managed` seeds the known
    /// ids; `resumed` are addresses a killed run journaled without an outcome.
    pub fn new(
        client: &'a C,
        store: &'a StateStore,
        run_id: RunId,
        managed: &[ManagedRow],
        resumed: BTreeSet<String>,
    ) -> Self {
        let address = |row: &ManagedRow| format!("{}.{}", row.kind, row.key);
        let book = Book {
            ids: managed
                .iter()
                .map(|row| (address(row), row.klaviyo_id.clone()))
                .collect(),
            applied: managed
                .iter()
                .map(|row| (address(row), row.applied.clone()))
                .collect(),
            returned: managed
                .iter()
                .map(|row| (address(row), row.returned.clone()))
                .collect(),
        };
        Executor {
            client,
            store,
            run_id,
            book: Mutex::new(book),
            recording: tokio::sync::Mutex::new(()),
            resumed,
            settled: watch::channel(Settled::default()).0,
        }
    }

    /// The changes of the run as they end (see [`Settled`], [`wait_for`]).
    pub fn settled(&self) -> watch::Receiver<Settled> {
        self.settled.subscribe()
    }

    /// One write to the state, while no other lane writes: SQLite would make the loser of two
    /// writes at once sleep in its busy handler (up to 100 ms a try), holding its lane back.
    async fn write<T>(&self, write: impl std::future::Future<Output = T>) -> T {
        let _recording = self.recording.lock().await;
        write.await
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        // A panic while the book was held ends the run anyway; its data is still whole.
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Run every change of `plan` (see [`Executor`] for the order), reporting each outcome to
    /// `progress` in plan order. Only a stop ([`crate::interrupt`]) or a failure of the state
    /// database ends the run early: without the journal, crash safety is gone.
    pub async fn execute(
        &mut self,
        plan: &Plan,
        progress: &mut dyn FnMut(&Event),
    ) -> Result<ExecutionReport, StateError> {
        let run = Run {
            plan,
            not_done: RefCell::default(),
            reasons: RefCell::default(),
            pending: RefCell::default(),
            next: Cell::new(0),
            ended: Cell::new(0),
            report: RefCell::default(),
            progress: RefCell::new(progress),
        };
        let result = self.phases(&run).await;
        self.settled.send_modify(|settled| settled.finished = true);
        result?;
        run.release(true);
        let mut report = run.report.into_inner();
        if run.ended.get() < plan.changes.len() {
            report.not_started = Some(plan.changes.len() - run.ended.get());
        }
        Ok(report)
    }

    async fn phases(&self, run: &Run<'_>) -> Result<(), StateError> {
        for lanes in lanes(run.plan).into_values() {
            if crate::interrupt::requested().is_some() {
                break;
            }
            futures::future::try_join_all(lanes.values().map(|units| self.lane(run, units)))
                .await?;
        }
        Ok(())
    }

    /// One lane's units, one at a time, each once what it waits for has ended.
    async fn lane(&self, run: &Run<'_>, units: &[Unit]) -> Result<(), StateError> {
        let mut settled = self.settled.subscribe();
        for unit in units {
            if !unit.waits_for.is_empty() {
                // The sender lives as long as `self`: this wait ends when the changes do.
                let _ = settled
                    .wait_for(|now| {
                        unit.waits_for
                            .iter()
                            .all(|address| now.outcomes.contains_key(address))
                    })
                    .await;
            }
            if crate::interrupt::requested().is_some() {
                return Ok(());
            }
            let first = &run.plan.changes[unit.changes[0]];
            let events: Vec<(usize, Event)> = if let Some(stop) = self.client.halted() {
                // Nothing more can be sent (Klaviyo stopped answering, the run's deadline
                // passed): the rest is not attempted, and its cause is reported once.
                let cause = stop.to_string();
                let mut reported = run.reasons.borrow().iter().any(|r| r.ends_with(&cause));
                let mut stop = Some(stop);
                unit.changes
                    .iter()
                    .map(|&index| {
                        let change = &run.plan.changes[index];
                        let cause = match stop.take() {
                            Some(stop) if !reported => FailureCause::NotAttempted(stop),
                            _ => FailureCause::Stopped,
                        };
                        reported = true;
                        (index, failed(change, cause))
                    })
                    .collect()
            } else if unit.link {
                let changes: Vec<&Change> =
                    unit.changes.iter().map(|&i| &run.plan.changes[i]).collect();
                let not_done = run.not_done.borrow().clone();
                let events = self.links(&changes, &not_done).await?;
                events
                    .into_iter()
                    .filter_map(|event| {
                        let index = unit
                            .changes
                            .iter()
                            .copied()
                            .find(|&i| run.plan.changes[i].address == event.address())?;
                        Some((index, event))
                    })
                    .collect()
            } else {
                let blocked = blocked_by(first, &run.not_done.borrow());
                let event = match blocked {
                    Some(by) => failed(first, FailureCause::Blocked { by }),
                    None => self.resource(first).await?,
                };
                vec![(unit.changes[0], event)]
            };
            for (index, event) in events {
                self.settle(run, index, event);
            }
        }
        Ok(())
    }

    /// Record how the change at `index` ended: published at once, reported in plan order.
    fn settle(&self, run: &Run<'_>, index: usize, event: Event) {
        let address = run.plan.changes[index].address.clone();
        let outcome = match &event {
            Event::Done { id, .. } => Outcome::Done(id.clone()),
            Event::Failed(failure) => {
                run.not_done.borrow_mut().insert(address.clone());
                run.reasons.borrow_mut().push(failure.cause.to_string());
                Outcome::NotDone
            }
        };
        self.settled.send_modify(|settled| {
            settled.outcomes.insert(address, outcome);
        });
        run.ended.set(run.ended.get() + 1);
        run.pending.borrow_mut().insert(index, event);
        run.release(false);
    }

    /// One resource change: journal, send, record.
    async fn resource(&self, change: &Change) -> Result<Event, StateError> {
        let Some(key) = &change.resource else {
            let cause = FailureCause::Malformed("the plan names no resource".to_owned());
            return Ok(failed(change, cause));
        };
        let resolved;
        let change = match self.with_created_lists(change) {
            Ok(Some(copy)) => {
                resolved = copy;
                &resolved
            }
            Ok(None) => change,
            Err(reason) => return Ok(failed(change, FailureCause::References(reason))),
        };
        let detail = json!({
            "kind": key.kind.prefix(),
            "key": key.key,
            "name": change.name,
            "klaviyo_id": change.klaviyo_id,
            "fields": change.fields.iter().filter(|f| f.is_klaviyo_field()).collect::<Vec<_>>(),
        });
        let entry = self
            .write(self.store.journal_started(
                self.run_id,
                &change.address,
                change.action.as_str(),
                &detail,
            ))
            .await?;
        match self.send(key, change).await {
            Ok((id, answer)) => {
                match (change.action, &id) {
                    (Action::Destroy, _) => {
                        let _recording = self.recording.lock().await;
                        self.store
                            .remove_managed(key.kind.prefix(), &key.key)
                            .await?;
                        let mut book = self.book();
                        book.ids.remove(&change.address);
                        book.applied.remove(&change.address);
                        book.returned.remove(&change.address);
                    }
                    (_, Some(id)) => {
                        let row = ManagedRow {
                            kind: key.kind.prefix().to_owned(),
                            key: key.key.clone(),
                            klaviyo_id: id.clone(),
                            applied: change.applied.clone().unwrap_or(Value::Null),
                            returned: Some(returned_after(change, answer)),
                        };
                        let _recording = self.recording.lock().await;
                        self.store.upsert_managed(&row, self.run_id).await?;
                        let mut book = self.book();
                        book.ids.insert(change.address.clone(), id.clone());
                        book.applied.insert(change.address.clone(), row.applied);
                        book.returned.insert(change.address.clone(), row.returned);
                    }
                    (_, None) => {}
                }
                if key.kind == ResourceKind::Tag
                    && matches!(change.action, Action::Destroy | Action::Replace)
                {
                    // Klaviyo deleted the old tag's links with it.
                    let targets: Vec<String> = self.book().applied.keys().cloned().collect();
                    for target in targets {
                        self.record_link(&target, &key.key, false).await?;
                    }
                }
                self.write(self.store.journal_succeeded(
                    entry,
                    id.as_deref(),
                    &json!({"klaviyo_id": id}),
                ))
                .await?;
                Ok(Event::Done {
                    address: change.address.clone(),
                    action: change.action,
                    id,
                })
            }
            Err(cause) => {
                self.write(self.store.journal_failed(entry, &cause.to_string()))
                    .await?;
                Ok(failed(change, cause))
            }
        }
    }

    /// A copy of `change` with the ids of lists created earlier in this run in place of the
    /// placeholders its segment definition holds (see [`crate::plan::references`]), so that
    /// Klaviyo gets and the state records real ids; `None` when it holds none.
    fn with_created_lists(&self, change: &Change) -> Result<Option<Change>, String> {
        let holds = change
            .payload
            .as_ref()
            .and_then(Payload::definition)
            .is_some_and(references::has_placeholder)
            || change
                .applied
                .as_ref()
                .is_some_and(references::has_placeholder);
        if !holds {
            return Ok(None);
        }
        let mut copy = change.clone();
        let book = self.book();
        // The fields too: the journal records them as sent.
        for field in &mut copy.fields {
            references::substitute(&mut field.after, &book.ids)?;
        }
        if let Some(definition) = copy.payload.as_mut().and_then(Payload::definition_mut) {
            references::substitute(definition, &book.ids)?;
        }
        if let Some(applied) = &mut copy.applied {
            references::substitute(applied, &book.ids)?;
        }
        Ok(Some(copy))
    }

    /// Send one resource change: the Klaviyo id it acted on or created, and the fields Klaviyo's
    /// answer carried (see [`returned_after`]).
    async fn send(&self, key: &ResourceKey, change: &Change) -> Result<Sent, FailureCause> {
        if let Some(problem) = change.payload_problem() {
            return Err(FailureCause::Malformed(problem));
        }
        match (change.action, &change.payload) {
            (Action::Create, Some(Payload::Create(new))) => {
                let (id, answer) = self.create(key, change, new).await?;
                Ok((Some(id), answer))
            }
            (Action::Update | Action::Adopt, Some(Payload::Update(edit))) => {
                let id = self.existing_id(key, change)?;
                let answer = self.update(&id, edit).await?;
                Ok((Some(id), answer))
            }
            (Action::Destroy, _) => {
                let id = self.existing_id(key, change)?;
                self.delete(key.kind, &id).await?;
                Ok((Some(id), None))
            }
            (Action::Replace, Some(Payload::Create(new))) => {
                let old = self.existing_id(key, change)?;
                self.delete(key.kind, &old).await?;
                let (id, answer) = self.create(key, change, new).await?;
                Ok((Some(id), answer))
            }
            // `payload_problem` rules out every other payload.
            (Action::Create | Action::Update | Action::Adopt | Action::Replace, _) => Err(
                FailureCause::Malformed(format!("{}: no payload", change.address)),
            ),
            (Action::Attach | Action::Detach, _) => Err(FailureCause::Malformed(
                "a link change without a link".to_owned(),
            )),
        }
    }

    fn existing_id(&self, key: &ResourceKey, change: &Change) -> Result<String, FailureCause> {
        change
            .klaviyo_id
            .clone()
            .or_else(|| self.book().ids.get(&key.address()).cloned())
            .ok_or_else(|| FailureCause::NoKlaviyoId {
                address: key.address(),
            })
    }

    /// Create the resource: its id, and the fields Klaviyo's answer carried (`None` when the
    /// resource was found created by an interrupted run instead).
    async fn create(
        &self,
        key: &ResourceKey,
        change: &Change,
        new: &NewResource,
    ) -> Result<(String, Option<Value>), FailureCause> {
        if self.resumed.contains(&change.address)
            && let Some(id) = self.find_unrecorded(key, new).await?
        {
            return Ok((id, None));
        }
        let mut answer = LiveState::default();
        let id = match new {
            NewResource::TagGroup { name, exclusive } => {
                let group = self.client.create_tag_group(name, *exclusive).await?;
                let id = group.id.clone();
                answer.tag_groups.insert(id.clone(), live_tag_group(group));
                id
            }
            NewResource::Tag { name, group } => {
                let group = self.tag_group_id(group.as_deref())?;
                let tag = self.client.create_tag(name, group.as_deref()).await?;
                let id = tag.id.clone();
                if let Some(group_id) = tag.tag_group_id {
                    answer.tags.insert(
                        id.clone(),
                        LiveTag {
                            id: tag.id,
                            name: tag.name,
                            group_id,
                        },
                    );
                }
                id
            }
            NewResource::List {
                name,
                opt_in_process,
            } => {
                let opt_in = opt_in_process.map(opt_in_to_api);
                let list = self.client.create_list(name, opt_in).await?;
                let id = list.id.clone();
                answer.lists.insert(id.clone(), live_list(list));
                id
            }
            NewResource::Segment {
                name,
                definition,
                is_starred,
            } => {
                let segment = self
                    .client
                    .create_segment(name, definition, *is_starred)
                    .await?;
                let id = segment.id.clone();
                return Ok((id, self.segment_answer(segment).await));
            }
        };
        let fields = live_fields(&answer, key.kind, &id);
        Ok((id, fields))
    }

    /// The compared fields of a segment Klaviyo answered a write with. Klaviyo may answer
    /// without the definition (the spec makes it nullable): the segment is then read back once,
    /// and if the definition is still missing it is left out (the next plan compares it
    /// directly), never recorded as `null`, which would look like an edit in Klaviyo forever.
    async fn segment_answer(&self, segment: crate::klaviyo::Segment) -> Option<Value> {
        let segment = if segment.definition.is_some() {
            segment
        } else {
            match self.client.get_segment(&segment.id).await {
                Ok(read) if read.definition.is_some() => read,
                _ => segment,
            }
        };
        let known = segment.definition.is_some();
        let id = segment.id.clone();
        let mut answer = LiveState::default();
        answer.segments.insert(id.clone(), live_segment(segment));
        let mut fields = live_fields(&answer, ResourceKind::Segment, &id)?;
        if !known && let Value::Object(fields) = &mut fields {
            fields.remove("definition");
        }
        Some(fields)
    }

    /// A resource an interrupted run created but did not record: same kind and exact name (in
    /// the same group, for tags), and not managed under another key.
    async fn find_unrecorded(
        &self,
        key: &ResourceKey,
        new: &NewResource,
    ) -> Result<Option<String>, FailureCause> {
        let found = match new {
            NewResource::TagGroup { name, .. } => self
                .client
                .find_tag_group_by_name(name)
                .await?
                .map(|g| g.id),
            NewResource::Tag { name, group } => {
                let group = self.tag_group_id(group.as_deref())?;
                self.client
                    .find_tag(name, group.as_deref())
                    .await?
                    .map(|t| t.id)
            }
            NewResource::List { name, .. } => {
                self.client.find_list_by_name(name).await?.map(|l| l.id)
            }
            NewResource::Segment { name, .. } => {
                self.client.find_segment_by_name(name).await?.map(|s| s.id)
            }
        };
        let prefix = format!("{}.", key.kind.prefix());
        let taken = |id: &String| {
            self.book()
                .ids
                .iter()
                .any(|(address, known)| known == id && address.starts_with(&prefix))
        };
        Ok(found.filter(|id| !taken(id)))
    }

    /// The Klaviyo id of the group (by name) a new tag goes in; `None` for the default group.
    fn tag_group_id(&self, group: Option<&str>) -> Result<Option<String>, FailureCause> {
        match group {
            None => Ok(None),
            Some(group) => {
                let address = ResourceKey::new(ResourceKind::TagGroup, group).address();
                match self.book().ids.get(&address) {
                    Some(id) => Ok(Some(id.clone())),
                    None => Err(FailureCause::NoKlaviyoId { address }),
                }
            }
        }
    }

    /// Update the resource: the fields Klaviyo's answer carried (`None`: it answered without
    /// the resource, or nothing was sent).
    async fn update(&self, id: &str, edit: &ResourceEdit) -> Result<Option<Value>, ApiError> {
        let mut answer = LiveState::default();
        let kind = match edit {
            ResourceEdit::TagGroup { name } => {
                if let Some(name) = name {
                    self.client.update_tag_group(id, name).await?;
                }
                ResourceKind::TagGroup
            }
            ResourceEdit::Tag { name } => {
                if let Some(name) = name {
                    self.client.update_tag(id, name).await?;
                }
                ResourceKind::Tag
            }
            ResourceEdit::List {
                name,
                opt_in_process,
            } => {
                let opt_in = opt_in_process.map(opt_in_to_api);
                if name.is_some() || opt_in.is_some() {
                    let list = self.client.update_list(id, name.as_deref(), opt_in).await?;
                    answer.lists.insert(list.id.clone(), live_list(list));
                }
                ResourceKind::List
            }
            ResourceEdit::Segment {
                name,
                definition,
                is_starred,
            } => {
                let update = SegmentUpdate {
                    name: name.clone(),
                    definition: definition.clone(),
                    is_starred: *is_starred,
                    is_active: None,
                };
                if update != SegmentUpdate::default() {
                    let segment = self.client.update_segment(id, &update).await?;
                    return Ok(self.segment_answer(segment).await);
                }
                ResourceKind::Segment
            }
        };
        Ok(live_fields(&answer, kind, id))
    }

    async fn delete(&self, kind: ResourceKind, id: &str) -> Result<(), ApiError> {
        let result = match kind {
            ResourceKind::TagGroup => self.client.delete_tag_group(id).await,
            ResourceKind::Tag => self.client.delete_tag(id).await,
            ResourceKind::List => self.client.delete_list(id).await,
            ResourceKind::Segment => self.client.delete_segment(id).await,
        };
        match result {
            // Already gone (deleted by hand, or by an interrupted run): the goal is reached.
            Err(err) if err.status() == Some(404) => Ok(()),
            other => other,
        }
    }

    /// Records in the managed row at `address` (a list or segment) that tag `tag` is now
    /// linked (`linked`) or not; rows without recorded `tags` and unmanaged targets are left
    /// alone (see [`record_link`]).
    async fn record_link(&self, address: &str, tag: &str, linked: bool) -> Result<(), StateError> {
        let _recording = self.recording.lock().await;
        let row = {
            let mut book = self.book();
            let Book {
                ids,
                applied,
                returned,
            } = &mut *book;
            let (Some(applied), Some(id)) = (applied.get_mut(address), ids.get(address)) else {
                return Ok(());
            };
            if !record_link(applied, tag, linked) {
                return Ok(());
            }
            let Some((kind, key)) = address.split_once('.') else {
                return Ok(());
            };
            ManagedRow {
                kind: kind.to_owned(),
                key: key.to_owned(),
                klaviyo_id: id.clone(),
                applied: applied.clone(),
                returned: returned.get(address).cloned().flatten(),
            }
        };
        self.store.upsert_managed(&row, self.run_id).await
    }

    /// One link request for `changes` (same tag, target kind and direction).
    async fn links(
        &self,
        changes: &[&Change],
        not_done: &BTreeSet<String>,
    ) -> Result<Vec<Event>, StateError> {
        let mut events = Vec::new();
        let mut ready: Vec<(&Change, String)> = Vec::new();
        let mut tag_id = None;
        for change in changes {
            if let Some(by) = blocked_by(change, not_done) {
                events.push(failed(change, FailureCause::Blocked { by }));
                continue;
            }
            let Some(link) = &change.link else { continue };
            let tag_address = ResourceKey::new(ResourceKind::Tag, &link.tag).address();
            let tag = link
                .tag_id
                .clone()
                .or_else(|| self.book().ids.get(&tag_address).cloned());
            let target = link
                .target_id
                .clone()
                .or_else(|| self.book().ids.get(&link.target.address()).cloned());
            match (tag, target) {
                (Some(tag), Some(target)) => {
                    tag_id = Some(tag);
                    ready.push((change, target));
                }
                _ => events.push(failed(change, FailureCause::UnresolvedLink)),
            }
        }
        let (Some(tag_id), Some((first, _))) = (tag_id, ready.first()) else {
            return Ok(events);
        };
        let Some(link) = &first.link else {
            return Ok(events);
        };
        let mut entries = Vec::new();
        for (change, target) in &ready {
            let detail = json!({"tag_id": tag_id, "target_id": target});
            entries.push(
                self.write(self.store.journal_started(
                    self.run_id,
                    &change.address,
                    change.action.as_str(),
                    &detail,
                ))
                .await?,
            );
        }
        let targets: Vec<String> = ready.iter().map(|(_, target)| target.clone()).collect();
        let client = self.client;
        let result = match (link.target.kind, first.action) {
            (ResourceKind::Segment, Action::Attach) => client.tag_segments(&tag_id, &targets).await,
            (ResourceKind::Segment, _) => client.untag_segments(&tag_id, &targets).await,
            (_, Action::Attach) => client.tag_lists(&tag_id, &targets).await,
            (_, _) => client.untag_lists(&tag_id, &targets).await,
        };
        let result = result.map_err(Arc::new);
        for ((change, target), entry) in ready.iter().zip(entries) {
            match &result {
                Ok(()) => {
                    if let Some(link) = &change.link {
                        self.record_link(
                            &link.target.address(),
                            &link.tag,
                            change.action == Action::Attach,
                        )
                        .await?;
                    }
                    self.write(
                        self.store
                            .journal_succeeded(entry, Some(target), &json!({})),
                    )
                    .await?;
                    events.push(Event::Done {
                        address: change.address.clone(),
                        action: change.action,
                        id: Some(target.clone()),
                    });
                }
                Err(err) => {
                    let reason = err.to_string();
                    self.write(self.store.journal_failed(entry, &reason))
                        .await?;
                    events.push(failed(change, FailureCause::Api(Arc::clone(err))));
                }
            }
        }
        Ok(events)
    }
}

/// What sending a resource change learnt: the Klaviyo id, and the fields of Klaviyo's answer.
type Sent = (Option<String>, Option<Value>);

/// What to record as Klaviyo's `returned` values after `change` was made, from the fields its
/// `answer` carried: those fields as answered; fields the change did not write as the plan saw
/// them (`expected`, which Klaviyo's answer, when there is one, supersedes); a written field the
/// answer does not carry is left out (the next plan compares it directly).
fn returned_after(change: &Change, answer: Option<Value>) -> Value {
    let mut returned = match (&change.expected, change.action) {
        (Some(Value::Object(seen)), Action::Update | Action::Adopt) => seen.clone(),
        _ => serde_json::Map::new(),
    };
    let answer = match answer {
        Some(Value::Object(answer)) => answer,
        _ => serde_json::Map::new(),
    };
    // A create starts from nothing, so only an update's written fields can be stale.
    if let Some(Payload::Update(edit)) = &change.payload {
        for field in edit.written() {
            if !answer.contains_key(field) {
                returned.remove(field);
            }
        }
    }
    returned.extend(answer);
    Value::Object(returned)
}

fn failed(change: &Change, cause: FailureCause) -> Event {
    Event::Failed(Failure {
        address: change.address.clone(),
        action: change.action,
        cause,
    })
}

fn record(report: &mut ExecutionReport, event: Event) {
    match event {
        Event::Done { address, .. } => report.succeeded.push(address),
        Event::Failed(failure) => report.failed.push(failure),
    }
}

/// The first dependency of `change` that did not happen.
fn blocked_by(change: &Change, not_done: &BTreeSet<String>) -> Option<String> {
    change
        .depends_on
        .iter()
        .find(|address| not_done.contains(*address))
        .cloned()
}

/// The group (by name) of the tag `change` creates, when it creates one in a group.
fn new_tag_group(change: &Change) -> Option<&str> {
    match &change.payload {
        Some(Payload::Create(NewResource::Tag { group, .. })) => group.as_deref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::OptInProcess;
    use crate::plan::ChangeKind;

    fn change(address: &str, depends_on: &[&str]) -> Change {
        let new = NewResource::List {
            name: "N".into(),
            opt_in_process: Some(OptInProcess::DoubleOptIn),
        };
        Change {
            name: "N".into(),
            fields: new.fields(),
            payload: Some(Payload::Create(new)),
            depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
            ..Change::example(address, ChangeKind::List, Action::Create)
        }
    }

    #[test]
    fn a_change_is_blocked_by_a_dependency_that_did_not_happen() {
        let not_done: BTreeSet<String> = ["tag_group.a".to_owned()].into();
        assert_eq!(
            blocked_by(&change("tag.a/x", &["tag_group.a"]), &not_done).as_deref(),
            Some("tag_group.a")
        );
        assert_eq!(
            blocked_by(&change("tag.b/x", &["tag_group.b"]), &not_done),
            None
        );
    }

    #[test]
    fn returned_values_come_from_the_answer_then_from_what_the_plan_saw() {
        let mut update = change("segment.big", &[]);
        update.kind = ChangeKind::Segment;
        update.action = Action::Update;
        update.expected =
            Some(json!({"name": "Big", "definition": {"v": 500.0}, "is_starred": false}));
        update.payload = Some(Payload::Update(ResourceEdit::Segment {
            name: None,
            definition: Some(json!({"v": 600})),
            is_starred: None,
        }));
        // Klaviyo answered with the segment: its values win.
        let answered = json!({"name": "Big", "definition": {"v": 600.0}, "is_starred": false});
        assert_eq!(returned_after(&update, Some(answered.clone())), answered);
        // Answered without the written field: left out, the unwritten ones as the plan saw them.
        assert_eq!(
            returned_after(&update, Some(json!({"name": "Big"}))),
            json!({"name": "Big", "is_starred": false})
        );
        assert_eq!(
            returned_after(&update, None),
            json!({"name": "Big", "is_starred": false})
        );
        // A create has nothing the plan saw.
        let create = change("list.a", &[]);
        assert_eq!(returned_after(&create, None), json!({}));
    }

    #[test]
    fn failures_render_their_cause_and_keep_its_source() {
        use std::error::Error as _;
        let c = change("list.a", &[]);
        let Event::Failed(skipped) = failed(&c, FailureCause::Blocked { by: "tag.x".into() })
        else {
            unreachable!()
        };
        assert!(skipped.skipped());
        assert_eq!(skipped.cause.to_string(), "skipped: tag.x did not happen");
        let api = ApiError::Config("bad".into());
        let text = api.to_string();
        let Event::Failed(refused) = failed(&c, api.into()) else {
            unreachable!()
        };
        assert!(!refused.skipped());
        assert_eq!(refused.cause.to_string(), text);
        let source = refused.cause.source().expect("the API error is the source");
        assert_eq!(source.to_string(), text);
        assert_eq!(
            FailureCause::Stopped.to_string(),
            "not attempted: the run stopped (cause above)"
        );
    }

    #[test]
    fn a_new_tag_waits_for_its_group_by_the_payload() {
        let mut tag = change("tag.g/x", &[]);
        tag.kind = ChangeKind::Tag;
        tag.payload = Some(Payload::Create(NewResource::Tag {
            name: "x".into(),
            group: Some("g".into()),
        }));
        assert_eq!(new_tag_group(&tag), Some("g"));
        tag.payload = Some(Payload::Create(NewResource::Tag {
            name: "x".into(),
            group: None,
        }));
        assert_eq!(new_tag_group(&tag), None);
    }
}
