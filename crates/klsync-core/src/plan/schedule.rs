//! The schedule `apply` runs, and how long it takes at Klaviyo's limits: the plan's time
//! estimate.
//!
//! A schedule is a few tracks that run side by side; a track is a list of [`Stage`]s run one
//! after another. A stage is a line of tasks, of which `in_flight` run at once (a worker takes
//! the next task in line when its task ends); a task is a sequence of [`Step`]s: requests, and
//! pauses (the wait before polling a job).
//!
//! [`simulate`] runs a schedule on a fake clock through the client's own limiters
//! ([`RateLimiters`]: the same sliding logs that pace `apply`), so the estimate cannot drift
//! from the pacing. A worker sends its next request as soon as the limiters admit the last one;
//! each is taken to be answered [`MODELLED_ANSWER_TIME`] later, which is when the limiters time
//! its place from. Slower answers, retries and jobs slower than the first poll are left out
//! (docs/operations.md, "Pacing and the time estimate").
//!
//! What `apply` does, track by track ([`config_stages`], [`data_tracks`]):
//! - the configuration changes, in the executor's phases and lanes ([`slot`]; see
//!   the `klsync` package's executor): each phase a stage whose tasks are its lanes, a lane's
//!   requests one after another (a link batch is one request). A change waiting for another
//!   lane's change (a tag for its new group) is not modelled: those are the quick buckets;
//! - beside them, the `profiles:` syncs, in manifest order: each one's bulk import jobs
//!   ([`JOBS_IN_FLIGHT`] at once, each created, then polled after [`first_poll_delay`], on the
//!   assumption that a job is done by then), then its property removals ([`UNSETS_IN_FLIGHT`]
//!   at once);
//! - beside both, per list with `members:`: the lookups of profiles already on the list
//!   ([`LOOKUPS_IN_FLIGHT`] at once; one at a time when the list is read whole), its jobs, the
//!   reads of the profiles its jobs added (mirror mode, one page at a time), the profile lookups
//!   for removals, then the removals. A list the same apply creates is taken as created at
//!   once (lists are created first, at 10 a second);
//! - any other request a sync's plan counts, one at a time after that sync's, so a request
//!   kind added to a sync is never left out of the estimate.

use std::collections::BTreeMap;
use std::time::Duration;

use governor::clock::{Clock, FakeRelativeClock, Reference};
use governor::nanos::Nanos;

use super::cost::requests_by_change;
use super::{Action, Change, ChangeKind};
use crate::data::{
    DataPlan, JOBS_IN_FLIGHT, LOOKUPS_IN_FLIGHT, UNSETS_IN_FLIGHT, first_poll_delay,
};
use crate::manifest::types::IdentifyBy;
use crate::model::ResourceKind;
use crate::ratelimit::{Acquisition, MODELLED_ANSWER_TIME, RateLimiters};
use klaviyo_spec::operations::Operation;

/// Most profiles in one bulk import job.
const PROFILES_PER_JOB: u64 = klaviyo_spec::limits::BULK_IMPORT_MAX_PROFILES as u64;

/// One step of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A request, sent once the limiters admit it.
    Send(Operation),
    /// A wait that is not the limiters' (before a job's poll).
    Pause(Duration),
}

/// Tasks run `in_flight` at a time, in line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// Each task's steps, run one after the other.
    pub tasks: Vec<Vec<Step>>,
    /// How many tasks run at once (at least one).
    pub in_flight: usize,
}

impl Stage {
    /// `count` one-request tasks, `in_flight` at a time.
    fn requests(operation: Operation, count: u64, in_flight: usize) -> Stage {
        Stage {
            tasks: (0..count).map(|_| vec![Step::Send(operation)]).collect(),
            in_flight,
        }
    }

    /// Bulk import jobs for `profiles` profiles in `jobs` jobs, each created then polled once.
    fn jobs(jobs: u64, profiles: u64) -> Stage {
        let per_job = profiles.div_ceil(jobs.max(1)).min(PROFILES_PER_JOB);
        let mut left = profiles;
        let tasks = (0..jobs)
            .map(|_| {
                let size = left.min(per_job);
                left -= size;
                vec![
                    Step::Send(Operation::BulkImportProfiles),
                    Step::Pause(first_poll_delay(
                        usize::try_from(size).unwrap_or(usize::MAX),
                    )),
                    Step::Send(Operation::GetBulkImportProfilesJob),
                ]
            })
            .collect();
        Stage {
            tasks,
            in_flight: JOBS_IN_FLIGHT,
        }
    }

    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// Where the executor runs a change: its phase, then its lane within the phase. Phases run one
/// after another: creates, updates, replaces and adoptions (a lane per kind of resource);
/// detaches, then attaches (a lane per target kind: lists, segments); destroys (one lane).
pub fn slot(change: &Change) -> (u8, u8) {
    let target = |change: &Change| match change.link.as_ref().map(|link| link.target.kind) {
        Some(ResourceKind::Segment) => 1,
        _ => 0,
    };
    match (change.action, change.kind) {
        (Action::Destroy, _) => (3, 0),
        (Action::Detach, _) => (1, target(change)),
        (Action::Attach, _) => (2, target(change)),
        (_, ChangeKind::TagGroup) => (0, 0),
        (_, ChangeKind::Tag) => (0, 1),
        (_, ChangeKind::List) => (0, 2),
        (_, ChangeKind::Segment | ChangeKind::TagLink) => (0, 3),
    }
}

/// The configuration part: per phase, a stage whose tasks are its lanes, each lane's requests
/// in plan order ([`crate::plan::cost::requests_by_change`]).
pub fn config_stages(changes: &[Change]) -> Vec<Stage> {
    let mut phases: BTreeMap<u8, BTreeMap<u8, Vec<Step>>> = BTreeMap::new();
    for (change, operations) in requests_by_change(changes) {
        let (phase, lane) = slot(change);
        phases
            .entry(phase)
            .or_default()
            .entry(lane)
            .or_default()
            .extend(operations.into_iter().map(Step::Send));
    }
    phases
        .into_values()
        .map(|lanes| {
            let tasks: Vec<Vec<Step>> = lanes
                .into_values()
                .filter(|steps| !steps.is_empty())
                .collect();
            Stage {
                in_flight: tasks.len(),
                tasks,
            }
        })
        .filter(|stage| !stage.is_empty())
        .collect()
}

/// The data part: the `profiles:` syncs' track and the `members:` syncs' track (see the module
/// docs).
pub fn data_tracks(data: &DataPlan) -> [Vec<Stage>; 2] {
    let count = |requests: &BTreeMap<String, u64>, operation: Operation| {
        requests.get(operation.operation_id()).copied().unwrap_or(0)
    };
    // Requests of a sync the stages above do not send, one at a time.
    let others = |requests: &BTreeMap<String, u64>, named: &[Operation]| -> Vec<Stage> {
        requests
            .iter()
            .filter(|(name, _)| !named.iter().any(|op| op.operation_id() == name.as_str()))
            .filter_map(|(name, count)| {
                let operation = Operation::ALL
                    .iter()
                    .find(|op| op.operation_id() == name.as_str())?;
                Some(Stage::requests(*operation, *count, 1))
            })
            .collect()
    };
    let mut profiles = Vec::new();
    let mut members = Vec::new();
    for sync in &data.profiles {
        let jobs = count(&sync.requests, Operation::BulkImportProfiles);
        profiles.push(Stage::jobs(jobs, sync.counts.new + sync.counts.changed));
        profiles.push(Stage::requests(
            Operation::CreateOrUpdateProfile,
            count(&sync.requests, Operation::CreateOrUpdateProfile),
            UNSETS_IN_FLIGHT,
        ));
        profiles.extend(others(
            &sync.requests,
            &[
                Operation::BulkImportProfiles,
                Operation::GetBulkImportProfilesJob,
                Operation::CreateOrUpdateProfile,
            ],
        ));
    }
    for list in &data.memberships {
        let lookups_in_flight = if list.identify_by == IdentifyBy::ExternalId {
            1
        } else {
            LOOKUPS_IN_FLIGHT
        };
        members.push(Stage::requests(
            Operation::GetProfilesForList,
            count(&list.requests, Operation::GetProfilesForList),
            lookups_in_flight,
        ));
        let jobs = count(&list.requests, Operation::BulkImportProfiles);
        members.push(Stage::jobs(jobs, list.counts.add));
        let sequential = [
            Operation::GetProfilesForBulkImportProfilesJob,
            Operation::GetProfiles,
            Operation::RemoveProfilesFromList,
        ];
        for operation in sequential {
            members.push(Stage::requests(
                operation,
                count(&list.requests, operation),
                1,
            ));
        }
        let mut named = vec![
            Operation::GetProfilesForList,
            Operation::BulkImportProfiles,
            Operation::GetBulkImportProfilesJob,
        ];
        named.extend(sequential);
        members.extend(others(&list.requests, &named));
    }
    profiles.retain(|stage| !stage.is_empty());
    members.retain(|stage: &Stage| !stage.is_empty());
    [profiles, members]
}

/// Each operation's requests one after another, every operation at once: the time of
/// `requests` alone, when nothing else orders them.
pub fn parallel_buckets(requests: &BTreeMap<Operation, u64>) -> Vec<Stage> {
    let tasks: Vec<Vec<Step>> = requests
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(&operation, &count)| {
            (0..count)
                .map(|_| Step::Send(operation))
                .collect::<Vec<_>>()
        })
        .collect();
    if tasks.is_empty() {
        return Vec::new();
    }
    vec![Stage {
        in_flight: tasks.len(),
        tasks,
    }]
}

/// One running task: its steps, the next one, and when it can take it.
struct Worker<'s> {
    steps: &'s [Step],
    next: usize,
    ready: Duration,
    waiting: Option<Acquisition>,
}

/// One track as it runs: the stages still to come, and the running stage's line and workers.
struct Track<'s> {
    stages: std::slice::Iter<'s, Stage>,
    line: std::slice::Iter<'s, Vec<Step>>,
    workers: Vec<Worker<'s>>,
}

impl<'s> Track<'s> {
    /// Start the track's next stage with tasks at `now`; `false` when none is left.
    fn next_stage(&mut self, now: Duration) -> bool {
        for stage in self.stages.by_ref() {
            self.line = stage.tasks.iter();
            self.workers = self
                .line
                .by_ref()
                .take(stage.in_flight.max(1))
                .map(|steps| Worker {
                    steps,
                    next: 0,
                    ready: now,
                    waiting: None,
                })
                .collect();
            if !self.workers.is_empty() {
                return true;
            }
        }
        false
    }
}

/// How long the `tracks` take, side by side, at the published limits (scaled by `factor`), run
/// through the client's limiters on a fake clock; within a track the stages run one after
/// another. Daily caps are not waited for here (the client refuses to wait a day; see
/// [`crate::plan::daily_cap_warnings`]).
pub fn simulate(tracks: &[Vec<Stage>], factor: f64) -> Duration {
    let limiters = RateLimiters::with_clock(factor, FakeRelativeClock::default());
    let clock = limiters.clock().clone();
    let start = clock.now();
    let elapsed = |clock: &FakeRelativeClock| Duration::from(clock.now().duration_since(start));
    let mut running: Vec<Track<'_>> = tracks
        .iter()
        .filter_map(|stages| {
            let mut track = Track {
                stages: stages.iter(),
                line: [].iter(),
                workers: Vec::new(),
            };
            track.next_stage(Duration::ZERO).then_some(track)
        })
        .collect();
    // The worker ready first goes next (the first track, then the first in line, on a tie), as
    // the runtime would wake it.
    while let Some((t, index)) = running
        .iter()
        .enumerate()
        .flat_map(|(t, track)| (0..track.workers.len()).map(move |i| (t, i)))
        .min_by_key(|&(t, i)| (running[t].workers[i].ready, t, i))
    {
        let now = elapsed(&clock);
        let ready = running[t].workers[index].ready;
        if ready > now {
            clock.advance(ready - now);
        }
        let now = elapsed(&clock);
        let track = &mut running[t];
        let worker = &mut track.workers[index];
        match worker.steps.get(worker.next) {
            Some(Step::Send(operation)) => {
                let acquisition = worker
                    .waiting
                    .get_or_insert_with(|| Acquisition::new(*operation, &[]));
                match limiters.poll(acquisition) {
                    Ok(()) => {
                        let answer = clock.now() + Nanos::from(MODELLED_ANSWER_TIME);
                        limiters.answered_at(acquisition, answer);
                        worker.waiting = None;
                        worker.next += 1;
                    }
                    Err(wait) => worker.ready = now + wait,
                }
            }
            Some(Step::Pause(pause)) => {
                worker.ready = now + *pause;
                worker.next += 1;
            }
            None => match track.line.next() {
                Some(steps) => {
                    *worker = Worker {
                        steps,
                        next: 0,
                        ready: now,
                        waiting: None,
                    }
                }
                None => {
                    track.workers.swap_remove(index);
                    if track.workers.is_empty() && !track.next_stage(now) {
                        running.remove(t);
                    }
                }
            },
        }
    }
    elapsed(&clock)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: Duration = crate::ratelimit::MODELLED_ANSWER_TIME;

    fn seconds(stages: &[Stage]) -> Duration {
        simulate(&[stages.to_vec()], 1.0)
    }

    /// One lane: `operations` one after another.
    fn one_at_a_time(operations: &[(Operation, usize)]) -> Vec<Stage> {
        let sequence: Vec<Step> = operations
            .iter()
            .flat_map(|&(op, count)| std::iter::repeat_n(Step::Send(op), count))
            .collect();
        vec![Stage {
            tasks: vec![sequence],
            in_flight: 1,
        }]
    }

    #[test]
    fn nothing_takes_no_time() {
        assert_eq!(seconds(&[]), Duration::ZERO);
        assert_eq!(seconds(&config_stages(&[])), Duration::ZERO);
        assert_eq!(simulate(&[Vec::new(), Vec::new()], 1.0), Duration::ZERO);
    }

    #[test]
    fn sixteen_segments_are_fifteen_a_second_apart_then_one_a_minute_after_the_first() {
        let second = Duration::from_secs(1) + ANSWER;
        let minute = Duration::from_secs(60) + ANSWER;
        assert_eq!(
            seconds(&one_at_a_time(&[(Operation::CreateSegment, 15)])),
            second * 14
        );
        assert_eq!(
            seconds(&one_at_a_time(&[(Operation::CreateSegment, 16)])),
            minute
        );
        assert_eq!(
            seconds(&one_at_a_time(&[(Operation::CreateSegment, 30)])),
            minute + second * 14
        );
    }

    #[test]
    fn stages_add_up_and_do_not_overlap() {
        let second = Duration::from_secs(1) + ANSWER;
        // Four tags (3/s): the fourth a second after the first. Then six segments: 5 s more,
        // though the segment bucket was idle during the tags.
        let tags = one_at_a_time(&[(Operation::CreateTag, 4)]);
        let segments = one_at_a_time(&[(Operation::CreateSegment, 6)]);
        assert_eq!(seconds(&tags), second);
        assert_eq!(seconds(&segments), second * 5);
        let both: Vec<Stage> = tags.into_iter().chain(segments).collect();
        assert_eq!(seconds(&both), second * 6);
    }

    #[test]
    fn one_request_at_a_time_interleaves_buckets() {
        let second = Duration::from_secs(1) + ANSWER;
        // tag_lists and tag_segments alternating, four each: both buckets fill in the first
        // second, then the fourth of each waits for the second one.
        let sequence: Vec<(Operation, usize)> = (0..4)
            .flat_map(|_| [(Operation::TagLists, 1), (Operation::TagSegments, 1)])
            .collect();
        assert_eq!(seconds(&one_at_a_time(&sequence)), second);
    }

    fn change(address: &str, kind: ChangeKind) -> Change {
        Change::example(address, kind, Action::Create)
    }

    #[test]
    fn each_kind_has_its_own_lane_so_lists_do_not_wait_for_segments() {
        let second = Duration::from_secs(1) + ANSWER;
        // Four segments take 3 s (1 a second); twenty lists (10 a second) go beside them.
        let mut changes: Vec<Change> = (0..20)
            .map(|i| change(&format!("list.l{i}"), ChangeKind::List))
            .collect();
        changes.extend((0..4).map(|i| change(&format!("segment.s{i}"), ChangeKind::Segment)));
        let stages = config_stages(&changes);
        assert_eq!(stages.len(), 1);
        assert_eq!(stages[0].in_flight, 2);
        assert_eq!(seconds(&stages), second * 3);
    }

    #[test]
    fn tracks_run_side_by_side() {
        let second = Duration::from_secs(1) + ANSWER;
        let segments = one_at_a_time(&[(Operation::CreateSegment, 4)]);
        let jobs = vec![Stage::jobs(2, 2_000)];
        assert_eq!(simulate(&[segments.clone(), jobs.clone()], 1.0), second * 3);
        // One after the other, they add up.
        let both: Vec<Stage> = segments.into_iter().chain(jobs).collect();
        assert_eq!(seconds(&both), second * 3 + first_poll_delay(1_000));
    }

    #[test]
    fn buckets_in_parallel_take_the_slowest() {
        let requests: BTreeMap<Operation, u64> =
            [(Operation::CreateList, 10), (Operation::CreateSegment, 16)].into();
        assert_eq!(
            seconds(&parallel_buckets(&requests)),
            Duration::from_secs(60) + ANSWER
        );
    }

    #[test]
    fn jobs_are_created_then_polled_four_at_a_time() {
        // Five small jobs: four created at once and polled after 250 ms, then the fifth, created
        // when the first worker is free, polled 250 ms later.
        let stage = Stage::jobs(5, 50);
        assert_eq!(seconds(&[stage]), Duration::from_millis(500));
        // A full job waits longer before its poll.
        assert_eq!(
            seconds(&[Stage::jobs(1, 10_000)]),
            Duration::from_millis(750)
        );
    }

    #[test]
    fn every_request_a_sync_counts_is_scheduled() {
        let plan: DataPlan = serde_json::from_value(serde_json::json!({
            "profiles": [],
            "memberships": [{
                "list": "vip", "list_id": null, "query": "q", "identify_by": "email",
                "mode": "mirror", "rows": 200,
                "counts": {"add": 200, "remove": 0, "unchanged": 0, "rejected": 0, "duplicates": 0},
                "add_sample": [], "remove_sample": [], "rejected_sample": [],
                "max_removals": null, "exceeds_max_removals": false,
                "requests": {"get_profiles_for_list": 2, "bulk_import_profiles": 1,
                    "get_bulk_import_profiles_job": 1, "get_profiles_for_bulk_import_profiles_job": 2,
                    "get_list_ids_for_profile": 1},
                "estimated_seconds": 0
            }],
            "requests": {}, "estimated_seconds": 0
        }))
        .expect("data plan");
        let sent: BTreeMap<Operation, usize> = data_tracks(&plan)
            .iter()
            .flatten()
            .flat_map(|stage| stage.tasks.iter().flatten())
            .fold(BTreeMap::new(), |mut sent, step| {
                if let Step::Send(op) = step {
                    *sent.entry(*op).or_default() += 1;
                }
                sent
            });
        let expected: BTreeMap<Operation, usize> = [
            (Operation::GetProfilesForList, 2),
            (Operation::BulkImportProfiles, 1),
            (Operation::GetBulkImportProfilesJob, 1),
            (Operation::GetProfilesForBulkImportProfilesJob, 2),
            (Operation::GetListIdsForProfile, 1),
        ]
        .into();
        assert_eq!(sent, expected);
    }

    #[test]
    fn factor_scales_the_estimate() {
        let segments = one_at_a_time(&[(Operation::CreateSegment, 16)]);
        assert_eq!(
            simulate(&[segments], 2.0),
            (Duration::from_secs(1) + ANSWER) * 7
        );
    }
}
