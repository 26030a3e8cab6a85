//! The schedule `apply` runs, and how long it takes at Klaviyo's limits: the plan's time
//! estimate.
//!
//! A schedule is a list of [`Stage`]s run one after another. A stage is a line of tasks, of
//! which `in_flight` run at once (a worker takes the next task in line when its task ends); a
//! task is a sequence of [`Step`]s: requests, and pauses (the wait before polling a job).
//!
//! [`simulate`] runs a schedule on a fake clock through the client's own limiters
//! ([`RateLimiters`]: the same sliding logs that pace `apply`), so the estimate cannot drift
//! from the pacing. Requests take no time in the simulation: server latency, retries and jobs
//! slower than the first poll are left out (docs/operations.md, "Pacing and the time estimate").
//!
//! What `apply` does, stage by stage ([`config_stages`], [`data_stages`]):
//! - the configuration changes, one at a time in plan order (a link batch is one request);
//! - per `profiles:` sync, in manifest order: its bulk import jobs ([`JOBS_IN_FLIGHT`] at once,
//!   each created, then polled after [`first_poll_delay`], on the assumption that a job is done
//!   by then), then its property removals ([`UNSETS_IN_FLIGHT`] at once);
//! - per list with `members:`: the lookups of profiles already on the list
//!   ([`LOOKUPS_IN_FLIGHT`] at once; one at a time when the list is read whole), its jobs, the
//!   reads of the profiles its jobs added (mirror mode, one page at a time), the profile lookups
//!   for removals, then the removals;
//! - any other request a sync's plan counts, one at a time after that sync's, so a request
//!   kind added to a sync is never left out of the estimate.

use std::collections::BTreeMap;
use std::time::Duration;

use governor::clock::{Clock, FakeRelativeClock, Reference};

use crate::klaviyo::Operation;
use crate::klaviyo::ratelimit::{Acquisition, RateLimiters};
use crate::manifest::types::IdentifyBy;
use crate::sync::{
    DataPlan, JOBS_IN_FLIGHT, LOOKUPS_IN_FLIGHT, UNSETS_IN_FLIGHT, first_poll_delay,
};

/// Most profiles in one bulk import job.
const PROFILES_PER_JOB: u64 = crate::klaviyo::BULK_IMPORT_MAX_PROFILES as u64;

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

/// The configuration part: the executor sends one change at a time, in plan order
/// (`operations`, as [`crate::plan::ordered_requests`] lists them).
pub fn config_stages(operations: &[Operation]) -> Vec<Stage> {
    if operations.is_empty() {
        return Vec::new();
    }
    vec![Stage {
        tasks: vec![operations.iter().map(|&op| Step::Send(op)).collect()],
        in_flight: 1,
    }]
}

/// The data part, in the order `apply` sends it (see the module docs).
pub fn data_stages(data: &DataPlan) -> Vec<Stage> {
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
    let mut stages = Vec::new();
    for sync in &data.profiles {
        let jobs = count(&sync.requests, Operation::BulkImportProfiles);
        stages.push(Stage::jobs(jobs, sync.counts.new + sync.counts.changed));
        stages.push(Stage::requests(
            Operation::CreateOrUpdateProfile,
            count(&sync.requests, Operation::CreateOrUpdateProfile),
            UNSETS_IN_FLIGHT,
        ));
        stages.extend(others(
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
        stages.push(Stage::requests(
            Operation::GetProfilesForList,
            count(&list.requests, Operation::GetProfilesForList),
            lookups_in_flight,
        ));
        let jobs = count(&list.requests, Operation::BulkImportProfiles);
        stages.push(Stage::jobs(jobs, list.counts.add));
        let sequential = [
            Operation::GetProfilesForBulkImportProfilesJob,
            Operation::GetProfiles,
            Operation::RemoveProfilesFromList,
        ];
        for operation in sequential {
            stages.push(Stage::requests(
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
        stages.extend(others(&list.requests, &named));
    }
    stages.retain(|stage| !stage.is_empty());
    stages
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

/// How long `stages` take at the published limits (scaled by `factor`), run through the
/// client's limiters on a fake clock. Daily caps are not waited for here (the client refuses
/// to wait a day; see [`crate::plan::daily_cap_warnings`]).
pub fn simulate(stages: &[Stage], factor: f64) -> Duration {
    let limiters = RateLimiters::with_clock(factor, FakeRelativeClock::default());
    let clock = limiters.clock().clone();
    let start = clock.now();
    let elapsed = |clock: &FakeRelativeClock| Duration::from(clock.now().duration_since(start));
    for stage in stages {
        let mut line = stage.tasks.iter();
        let now = elapsed(&clock);
        let mut workers: Vec<Worker<'_>> = line
            .by_ref()
            .take(stage.in_flight.max(1))
            .map(|steps| Worker {
                steps,
                next: 0,
                ready: now,
                waiting: None,
            })
            .collect();
        // The worker ready first goes next (the first in line on a tie), as the runtime would
        // wake it.
        while let Some(index) = (0..workers.len()).min_by_key(|&i| (workers[i].ready, i)) {
            let worker = &mut workers[index];
            let now = elapsed(&clock);
            if worker.ready > now {
                clock.advance(worker.ready - now);
            }
            let now = elapsed(&clock);
            match worker.steps.get(worker.next) {
                Some(Step::Send(operation)) => {
                    let acquisition = worker
                        .waiting
                        .get_or_insert_with(|| Acquisition::new(*operation, &[]));
                    match limiters.poll(acquisition) {
                        Ok(()) => {
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
                None => match line.next() {
                    Some(steps) => {
                        *worker = Worker {
                            steps,
                            next: 0,
                            ready: now,
                            waiting: None,
                        }
                    }
                    None => {
                        workers.swap_remove(index);
                    }
                },
            }
        }
    }
    elapsed(&clock)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUARD: Duration = crate::klaviyo::ratelimit::GUARD;

    fn seconds(stages: &[Stage]) -> Duration {
        simulate(stages, 1.0)
    }

    fn one_at_a_time(operations: &[(Operation, usize)]) -> Vec<Stage> {
        let sequence: Vec<Operation> = operations
            .iter()
            .flat_map(|&(op, count)| std::iter::repeat_n(op, count))
            .collect();
        config_stages(&sequence)
    }

    #[test]
    fn nothing_takes_no_time() {
        assert_eq!(seconds(&[]), Duration::ZERO);
        assert_eq!(seconds(&config_stages(&[])), Duration::ZERO);
    }

    #[test]
    fn sixteen_segments_are_fifteen_a_second_apart_then_one_a_minute_after_the_first() {
        let second = Duration::from_secs(1) + GUARD;
        let minute = Duration::from_secs(60) + GUARD;
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
        let second = Duration::from_secs(1) + GUARD;
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
        let second = Duration::from_secs(1) + GUARD;
        // tag_lists and tag_segments alternating, four each: both buckets fill in the first
        // second, then the fourth of each waits for the second one.
        let sequence: Vec<Operation> = (0..4)
            .flat_map(|_| [Operation::TagLists, Operation::TagSegments])
            .collect();
        assert_eq!(seconds(&config_stages(&sequence)), second);
    }

    #[test]
    fn buckets_in_parallel_take_the_slowest() {
        let requests: BTreeMap<Operation, u64> =
            [(Operation::CreateList, 10), (Operation::CreateSegment, 16)].into();
        assert_eq!(
            seconds(&parallel_buckets(&requests)),
            Duration::from_secs(60) + GUARD
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
        let sent: BTreeMap<Operation, usize> = data_stages(&plan)
            .iter()
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
            simulate(&segments, 2.0),
            (Duration::from_secs(1) + GUARD) * 7
        );
    }
}
