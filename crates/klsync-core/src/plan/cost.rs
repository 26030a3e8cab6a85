//! What a plan costs: the API requests `apply` sends, per operation, and how long they take at
//! Klaviyo's published rate limits.
//!
//! The time is the schedule `apply` runs ([`super::schedule`]: the configuration changes in
//! their lanes, beside them the data syncs' jobs, polls and member changes), simulated through
//! the client's own limiters: one number for configuration and data together. A daily cap, when
//! exceeded, adds a day for each full day's allowance used.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::schedule::{self, Stage};
use super::{Action, Change, ChangeKind, Cost};
use crate::data::DataPlan;
use klaviyo_spec::operations::Operation;

/// The requests `apply` will send for `changes`, per operation.
pub fn requests(changes: &[Change]) -> BTreeMap<Operation, u64> {
    let mut requests: BTreeMap<Operation, u64> = BTreeMap::new();
    for operation in ordered_requests(changes) {
        *requests.entry(operation).or_default() += 1;
    }
    requests
}

/// The requests `apply` sends for `changes`, in the order it sends them.
///
/// Tag links are written from the tag side, one request per (tag, list or segment kind, attach
/// or detach) carrying every target, sent where the first of them is in the plan. Prevented
/// changes never run and cost nothing; neither do adoptions without field changes and updates
/// of klsync's own record (`prevent_destroy`).
pub fn ordered_requests(changes: &[Change]) -> Vec<Operation> {
    requests_by_change(changes)
        .into_iter()
        .flat_map(|(_, operations)| operations)
        .collect()
}

/// [`ordered_requests`], per change: a link request goes with the first change it carries.
pub(crate) fn requests_by_change(changes: &[Change]) -> Vec<(&Change, Vec<Operation>)> {
    let mut sequence = Vec::new();
    let mut link_batches: BTreeSet<(Operation, &str)> = BTreeSet::new();
    for change in changes.iter().filter(|change| !change.prevented) {
        let writes_fields = change.fields.iter().any(|field| field.is_klaviyo_field());
        let operations: &[Operation] = match (change.kind, change.action) {
            (ChangeKind::TagLink, action) => {
                if let Some(link) = &change.link {
                    let operation = match (link.target.kind, action) {
                        (crate::model::ResourceKind::Segment, Action::Attach) => {
                            Operation::TagSegments
                        }
                        (crate::model::ResourceKind::Segment, _) => {
                            Operation::RemoveTagFromSegments
                        }
                        (_, Action::Attach) => Operation::TagLists,
                        (_, _) => Operation::RemoveTagFromLists,
                    };
                    if link_batches.insert((operation, link.tag.as_str())) {
                        sequence.push((change, vec![operation]));
                    }
                }
                continue;
            }
            (kind, Action::Create) => &[create_of(kind)],
            (kind, Action::Update | Action::Adopt) if writes_fields => &[update_of(kind)],
            (_, Action::Update | Action::Adopt) => &[],
            (kind, Action::Destroy) => &[delete_of(kind)],
            (kind, Action::Replace) => &[delete_of(kind), create_of(kind)],
            (_, Action::Attach | Action::Detach) => &[],
        };
        sequence.push((change, operations.to_vec()));
    }
    sequence
}

fn create_of(kind: ChangeKind) -> Operation {
    match kind {
        ChangeKind::TagGroup => Operation::CreateTagGroup,
        ChangeKind::Tag => Operation::CreateTag,
        ChangeKind::List => Operation::CreateList,
        ChangeKind::Segment | ChangeKind::TagLink => Operation::CreateSegment,
    }
}

fn update_of(kind: ChangeKind) -> Operation {
    match kind {
        ChangeKind::TagGroup => Operation::UpdateTagGroup,
        ChangeKind::Tag => Operation::UpdateTag,
        ChangeKind::List => Operation::UpdateList,
        ChangeKind::Segment | ChangeKind::TagLink => Operation::UpdateSegment,
    }
}

fn delete_of(kind: ChangeKind) -> Operation {
    match kind {
        ChangeKind::TagGroup => Operation::DeleteTagGroup,
        ChangeKind::Tag => Operation::DeleteTag,
        ChangeKind::List => Operation::DeleteList,
        ChangeKind::Segment | ChangeKind::TagLink => Operation::DeleteSegment,
    }
}

const SECONDS_PER_DAY: u64 = 86_400;

/// How long `apply` takes for `changes` and the data part `data`, at the published limits:
/// the schedule it runs ([`schedule`]), plus a day for each full day's allowance of a daily cap
/// used.
pub fn estimate(changes: &[Change], data: Option<&DataPlan>) -> Duration {
    let mut tracks: Vec<Vec<Stage>> = vec![schedule::config_stages(changes)];
    let mut total = requests(changes);
    if let Some(data) = data {
        tracks.extend(schedule::data_tracks(data));
        for (name, count) in &data.requests {
            if let Some(operation) = Operation::ALL
                .iter()
                .find(|operation| operation.operation_id() == name)
            {
                *total.entry(*operation).or_default() += count;
            }
        }
    }
    schedule::simulate(&tracks, 1.0) + extra_days(&total)
}

/// How long `requests` take when nothing orders them: each operation's requests one after
/// another, every operation at once (a data sync's own figure, a check's cost).
pub fn estimated_duration(requests: &BTreeMap<Operation, u64>) -> Duration {
    schedule::simulate(&[schedule::parallel_buckets(requests)], 1.0) + extra_days(requests)
}

/// A day for each full day's allowance of a daily cap that `requests` use up: the client
/// refuses to wait for the next day, and the rest goes out in the next run.
fn extra_days(requests: &BTreeMap<Operation, u64>) -> Duration {
    let days = requests
        .iter()
        .filter_map(|(operation, count)| {
            let daily = u64::from(operation.rate_limit().daily?);
            (daily > 0 && *count > daily).then(|| (count - 1) / daily)
        })
        .max()
        .unwrap_or(0);
    Duration::from_secs(days * SECONDS_PER_DAY)
}

/// A duration in whole seconds, rounded to the nearest.
pub fn whole_seconds(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis().saturating_add(500) / 1000).unwrap_or(u64::MAX)
}

/// One warning per operation whose daily cap the plan exceeds.
pub fn daily_cap_warnings(requests: &BTreeMap<Operation, u64>) -> Vec<String> {
    requests
        .iter()
        .filter_map(|(operation, count)| {
            let daily = u64::from(operation.rate_limit().daily?);
            (*count > daily).then(|| {
                format!(
                    "the plan needs {count} {} requests but Klaviyo allows {daily} a day: applying it takes more than one day",
                    operation.operation_id()
                )
            })
        })
        .collect()
}

/// The serialisable cost of `changes` (whose requests are `requests`), without a data part.
pub(crate) fn cost(changes: &[Change], requests: &BTreeMap<Operation, u64>) -> Cost {
    Cost {
        requests: requests
            .iter()
            .map(|(operation, count)| (operation.operation_id().to_owned(), *count))
            .collect(),
        total_requests: requests.values().sum(),
        estimated_seconds: whole_seconds(estimate(changes, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(pairs: &[(Operation, u64)]) -> u64 {
        whole_seconds(estimated_duration(&pairs.iter().copied().collect()))
    }

    #[test]
    fn nothing_takes_no_time() {
        assert_eq!(secs(&[]), 0);
        assert_eq!(secs(&[(Operation::CreateTag, 0)]), 0);
        assert_eq!(whole_seconds(estimate(&[], None)), 0);
    }

    #[test]
    fn a_bucket_goes_at_its_burst_until_its_minute_is_full() {
        // create_tag: 3/s, 60/min: three at once, the fourth a second later.
        assert_eq!(secs(&[(Operation::CreateTag, 3)]), 0);
        assert_eq!(secs(&[(Operation::CreateTag, 4)]), 1);
        // 60 in 20 bursts, the last 19 s after the first; the 61st a minute after the first.
        assert_eq!(secs(&[(Operation::CreateTag, 60)]), 19);
        assert_eq!(secs(&[(Operation::CreateTag, 61)]), 60);
        // create_segment: 1/s, 15/min.
        assert_eq!(secs(&[(Operation::CreateSegment, 16)]), 60);
        assert_eq!(secs(&[(Operation::CreateSegment, 30)]), 74);
    }

    #[test]
    fn daily_cap_adds_days_and_warns() {
        // create_segment: 100 a day.
        let over: BTreeMap<_, _> = [(Operation::CreateSegment, 101)].into_iter().collect();
        assert!(estimated_duration(&over).as_secs() > SECONDS_PER_DAY);
        let warnings = daily_cap_warnings(&over);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("create_segment"), "{warnings:?}");
        let at_cap: BTreeMap<_, _> = [(Operation::CreateSegment, 100)].into_iter().collect();
        assert!(daily_cap_warnings(&at_cap).is_empty());
        // 100 at 15/min: six full minutes, then ten a second apart (the last 9 s after the
        // first of them).
        assert_eq!(whole_seconds(estimated_duration(&at_cap)), 6 * 60 + 9);
    }

    #[test]
    fn whole_seconds_round_to_the_nearest() {
        assert_eq!(whole_seconds(Duration::from_millis(499)), 0);
        assert_eq!(whole_seconds(Duration::from_millis(500)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(60_025)), 60);
    }
}
