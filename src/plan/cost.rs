//! What a plan costs: the API requests `apply` sends, per operation, and the least time they
//! take at Klaviyo's published rate limits.
//!
//! Each [`Operation`] has its own rate-limit bucket (`x-klaviyo-ratelimit` in the spec), and
//! buckets are independent, so the estimate is the slowest bucket. Per bucket, requests go out
//! at the burst rate until the minute's steady allowance is used up, then wait for the next
//! minute; a daily cap, when exceeded, pushes the rest to the next day.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{Action, Change, ChangeKind, Cost};
use crate::klaviyo::operations::Operation;

/// The requests `apply` will send for `changes`, per operation.
///
/// Tag links are written from the tag side, one request per (tag, list or segment kind, attach
/// or detach) carrying every target. Prevented changes never run and cost nothing; neither do
/// adoptions without field changes and updates of klsync's own record (`prevent_destroy`).
pub fn requests(changes: &[Change]) -> BTreeMap<Operation, u64> {
    let mut requests: BTreeMap<Operation, u64> = BTreeMap::new();
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
                    link_batches.insert((operation, link.tag.as_str()));
                }
                &[]
            }
            (kind, Action::Create) => &[create_of(kind)],
            (kind, Action::Update | Action::Adopt) if writes_fields => &[update_of(kind)],
            (_, Action::Update | Action::Adopt) => &[],
            (kind, Action::Destroy) => &[delete_of(kind)],
            (kind, Action::Replace) => &[delete_of(kind), create_of(kind)],
            (_, Action::Attach | Action::Detach) => &[],
        };
        for operation in operations {
            *requests.entry(*operation).or_default() += 1;
        }
    }
    for (operation, _) in link_batches {
        *requests.entry(operation).or_default() += 1;
    }
    requests
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

/// The least wall time `requests` take at the published limits: the slowest bucket.
///
/// Per bucket, counting each burst window in full: `n` requests need `ceil(n / steady)` minute
/// windows; the last one is spent at the burst rate, `ceil(rest / burst)` seconds. A daily cap
/// adds a day for each full day's allowance used.
pub fn estimated_duration(requests: &BTreeMap<Operation, u64>) -> Duration {
    let seconds = requests
        .iter()
        .map(|(operation, count)| bucket_seconds(*operation, *count))
        .max()
        .unwrap_or(0);
    Duration::from_secs(seconds)
}

fn bucket_seconds(operation: Operation, count: u64) -> u64 {
    if count == 0 {
        return 0;
    }
    let limit = operation.rate_limit();
    let burst = u64::from(limit.burst_per_second.max(1));
    // A minute can hold no more than 60 bursts, whatever the steady limit says.
    let per_minute = u64::from(limit.steady_per_minute.max(1)).min(burst * 60);
    let (days, today) = match limit.daily.map(u64::from) {
        Some(daily) if daily > 0 && count > daily => {
            let extra_days = (count - 1) / daily;
            (extra_days, count - extra_days * daily)
        }
        _ => (0, count),
    };
    let minutes = today.div_ceil(per_minute);
    let last_minute = today - (minutes - 1) * per_minute;
    days * SECONDS_PER_DAY + (minutes - 1) * 60 + last_minute.div_ceil(burst)
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

/// The serialisable cost of `requests`.
pub(crate) fn cost(requests: &BTreeMap<Operation, u64>) -> Cost {
    Cost {
        requests: requests
            .iter()
            .map(|(operation, count)| (operation.operation_id().to_owned(), *count))
            .collect(),
        total_requests: requests.values().sum(),
        estimated_seconds: estimated_duration(requests).as_secs(),
    }
}

/// A duration for humans: `4s`, `1m 1s`, `2h 3m`, `1d 0h`.
pub fn format_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    let (days, hours, minutes, seconds) = (
        total / SECONDS_PER_DAY,
        total % SECONDS_PER_DAY / 3600,
        total % 3600 / 60,
        total % 60,
    );
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds}s")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(pairs: &[(Operation, u64)]) -> u64 {
        estimated_duration(&pairs.iter().copied().collect()).as_secs()
    }

    #[test]
    fn nothing_takes_no_time() {
        assert_eq!(secs(&[]), 0);
        assert_eq!(secs(&[(Operation::CreateTag, 0)]), 0);
    }

    #[test]
    fn burst_window_bounds_small_counts() {
        // create_tag: 3/s, 60/m.
        assert_eq!(secs(&[(Operation::CreateTag, 1)]), 1);
        assert_eq!(secs(&[(Operation::CreateTag, 3)]), 1);
        assert_eq!(secs(&[(Operation::CreateTag, 4)]), 2);
        assert_eq!(secs(&[(Operation::CreateTag, 60)]), 20);
    }

    #[test]
    fn steady_window_forces_a_wait_for_the_next_minute() {
        // create_tag: 60 per minute, then one more second in the next minute.
        assert_eq!(secs(&[(Operation::CreateTag, 61)]), 61);
        // create_segment: 1/s, 15/m: 16 requests = 60s wait + 1s.
        assert_eq!(secs(&[(Operation::CreateSegment, 16)]), 61);
        assert_eq!(secs(&[(Operation::CreateSegment, 30)]), 75);
    }

    #[test]
    fn buckets_run_in_parallel_so_the_slowest_wins() {
        assert_eq!(
            secs(&[(Operation::CreateList, 10), (Operation::CreateSegment, 16)]),
            61
        );
    }

    #[test]
    fn daily_cap_adds_days_and_warns() {
        // create_segment: 100 a day.
        let over: BTreeMap<_, _> = [(Operation::CreateSegment, 101)].into_iter().collect();
        assert_eq!(estimated_duration(&over).as_secs(), SECONDS_PER_DAY + 1);
        let warnings = daily_cap_warnings(&over);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("create_segment"), "{warnings:?}");
        let at_cap: BTreeMap<_, _> = [(Operation::CreateSegment, 100)].into_iter().collect();
        assert!(daily_cap_warnings(&at_cap).is_empty());
        // 100 at 15/m: 6 full minutes + 10 seconds.
        assert_eq!(estimated_duration(&at_cap).as_secs(), 6 * 60 + 10);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(Duration::from_secs(4)), "4s");
        assert_eq!(format_duration(Duration::from_secs(61)), "1m 1s");
        assert_eq!(format_duration(Duration::from_secs(3720)), "1h 2m");
        assert_eq!(format_duration(Duration::from_secs(90_000)), "1d 1h");
    }
}
