//! Client-side pacing to Klaviyo's published rate limits, so a run spends its time waiting
//! locally instead of collecting 429s.
//!
//! Klaviyo counts requests per bucket in **fixed** windows (1 s burst, 60 s steady) and answers
//! 429 as soon as either window is full. Every [`Operation`] has its own bucket, and a few
//! `include=` / `additional-fields` extras charge a stricter [`ExtraBucket`] as well. Each bucket
//! here is two governor GCRA limiters (burst and steady); a request takes one cell from every
//! limiter of every bucket it touches.
//!
//! GCRA is a sliding-window algorithm. Configured naively (burst `N`, one cell per `T/N`) it admits
//! up to `2N - 1` requests inside one fixed window of length `T`: the full burst at the end of a
//! window and the refill at the start of the next one land in the same window on the server. So
//! each limiter is configured with a burst `b` and an emission interval `T / (N - b + 1)`, which
//! admits at most `b + (N - b + 1) - 1 = N` requests in *any* window of length `T`, whatever the
//! server's window alignment. The price is a slightly lower sustained rate (`N - b + 1` per `T`),
//! see [`window_quota`].
//!
//! The clock is a type parameter so tests drive the limiters with governor's
//! [`FakeRelativeClock`](governor::clock::FakeRelativeClock) and never sleep.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::operations::{ExtraBucket, Operation, RateLimit};

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// One Klaviyo rate-limit bucket: an operation's own, or an extra one charged for expensive
/// query parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    /// The operation's own bucket.
    Operation(Operation),
    /// A stricter bucket charged on top of the operation's.
    Extra(ExtraBucket),
}

impl Bucket {
    /// The published limit of this bucket.
    pub fn rate_limit(self) -> RateLimit {
        match self {
            Bucket::Operation(op) => op.rate_limit(),
            Bucket::Extra(extra) => extra.rate_limit(),
        }
    }
}

/// A GCRA quota that never admits more than `limit` cells in any window of length `window`,
/// with an initial burst of `burst` (clamped to `1..=limit`).
///
/// GCRA admits at most `b + ceil(window / e) - 1` cells in a half-open window of length
/// `window`; with `e = window / (limit - b + 1)` (rounded *up* to whole nanoseconds so rounding
/// can only make it stricter) that is exactly `limit`.
pub fn window_quota(limit: u32, burst: u32, window: Duration) -> Quota {
    let limit = limit.max(1);
    let burst = burst.clamp(1, limit);
    let refills = u128::from(limit - burst + 1);
    let nanos = window.as_nanos().div_ceil(refills).max(1);
    let interval = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    Quota::with_period(interval)
        .expect("interval is at least one nanosecond")
        .allow_burst(NonZeroU32::new(burst).expect("burst is at least 1"))
}

/// A limit scaled by the configured factor, never below one request per window.
fn scaled(limit: u32, factor: f64) -> u32 {
    let value = (f64::from(limit) * factor).floor();
    if value < 1.0 {
        1
    } else if value >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        // In range and integral after the checks above.
        value as u32
    }
}

type Limiter<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The two windows of one bucket.
struct Windows<C: Clock> {
    burst: Limiter<C>,
    steady: Limiter<C>,
}

/// Requests counted against a daily cap, in a 24-hour window starting at the first of them.
struct DailyWindow<I> {
    started: I,
    count: u32,
}

/// The daily cap of an operation is used up; waiting for it would take hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyCapReached {
    /// The operation whose cap is used up.
    pub operation: Operation,
    /// The cap (after scaling) that was reached.
    pub cap: u32,
}

/// The limiters of every Klaviyo bucket, shared by all clones (and so by all tasks using one
/// client).
pub struct RateLimiters<C: Clock = DefaultClock> {
    inner: Arc<Inner<C>>,
}

impl<C: Clock> Clone for RateLimiters<C> {
    fn clone(&self) -> Self {
        RateLimiters {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<C: Clock> {
    clock: C,
    factor: f64,
    windows: HashMap<Bucket, Windows<C>>,
    daily: Mutex<HashMap<Operation, DailyWindow<C::Instant>>>,
}

impl RateLimiters<DefaultClock> {
    /// Limiters on the real clock; `factor` scales every published limit (1.0 = as published).
    pub fn new(factor: f64) -> Self {
        Self::with_clock(factor, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiters<C> {
    /// Limiters on the given clock; `factor` scales every published limit.
    pub fn with_clock(factor: f64, clock: C) -> Self {
        let buckets = Operation::ALL
            .iter()
            .map(|&op| Bucket::Operation(op))
            .chain(ExtraBucket::ALL.iter().map(|&extra| Bucket::Extra(extra)));
        let windows = buckets
            .map(|bucket| {
                let limit = bucket.rate_limit();
                let burst = scaled(limit.burst_per_second, factor);
                let steady = scaled(limit.steady_per_minute, factor);
                // Half the burst up front keeps the refill interval short enough that the burst
                // window never becomes the bottleneck at the steady rate.
                let burst_quota = window_quota(burst, burst.div_ceil(2), SECOND);
                let steady_quota = window_quota(steady, burst, MINUTE);
                let windows = Windows {
                    burst: RateLimiter::direct_with_clock(burst_quota, clock.clone()),
                    steady: RateLimiter::direct_with_clock(steady_quota, clock.clone()),
                };
                (bucket, windows)
            })
            .collect();
        RateLimiters {
            inner: Arc::new(Inner {
                clock,
                factor,
                windows,
                daily: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Count one request against `operation`'s daily cap, or refuse if the cap is used up.
    ///
    /// Klaviyo does not say when its day starts, so the window is the 24 hours from the first
    /// capped request this process made. A fresh process cannot know what earlier runs used;
    /// the server's 429 with a long `Retry-After` covers that case.
    pub fn count_daily(&self, operation: Operation) -> Result<(), DailyCapReached> {
        let Some(daily) = operation.rate_limit().daily else {
            return Ok(());
        };
        let cap = scaled(daily, self.inner.factor);
        let now = self.inner.clock.now();
        let mut windows = self.inner.daily.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows.entry(operation).or_insert(DailyWindow {
            started: now,
            count: 0,
        });
        if Duration::from(now.duration_since(window.started)) >= DAY {
            *window = DailyWindow {
                started: now,
                count: 0,
            };
        }
        if window.count >= cap {
            return Err(DailyCapReached { operation, cap });
        }
        window.count += 1;
        Ok(())
    }

    /// Try to take the cells `acquisition` still needs. `Err(wait)` says how long until the
    /// limiter that refused will admit; call again after waiting. Cells already taken are kept,
    /// so repeated polls never charge a bucket twice.
    pub fn poll(&self, acquisition: &mut Acquisition) -> Result<(), Duration> {
        while let Some(&(bucket, window)) = acquisition.cells.get(acquisition.taken) {
            let windows = &self.inner.windows[&bucket];
            let limiter = match window {
                Window::Burst => &windows.burst,
                Window::Steady => &windows.steady,
            };
            match limiter.check() {
                Ok(()) => acquisition.taken += 1,
                Err(not_until) => {
                    return Err(not_until.wait_time_from(self.inner.clock.now()));
                }
            }
        }
        Ok(())
    }

    /// The clock the limiters run on.
    pub fn clock(&self) -> &C {
        &self.inner.clock
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    Burst,
    Steady,
}

/// The cells one request must take before it is sent, and how many it already holds.
#[derive(Debug, Clone)]
pub struct Acquisition {
    cells: Vec<(Bucket, Window)>,
    taken: usize,
}

impl Acquisition {
    /// The cells a request for `operation` with the given extra buckets needs.
    ///
    /// Order matters because cells taken early are held while later limiters are waited on: the
    /// slow steady windows and the stricter extra buckets come first, and the operation's burst
    /// window comes last, right before the request is sent, so what reaches the server is paced
    /// by the burst window.
    pub fn new(operation: Operation, extras: &[ExtraBucket]) -> Self {
        let mut cells = Vec::with_capacity(2 * (extras.len() + 1));
        for &extra in extras {
            cells.push((Bucket::Extra(extra), Window::Steady));
            cells.push((Bucket::Extra(extra), Window::Burst));
        }
        cells.push((Bucket::Operation(operation), Window::Steady));
        cells.push((Bucket::Operation(operation), Window::Burst));
        Acquisition { cells, taken: 0 }
    }

    /// The buckets this acquisition charges.
    pub fn buckets(&self) -> Vec<Bucket> {
        let mut buckets: Vec<Bucket> = self.cells.iter().map(|&(bucket, _)| bucket).collect();
        buckets.dedup();
        buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    /// Take cells for `count` requests as fast as the limiters allow, advancing the fake clock
    /// by each wait; returns the admission times.
    fn admit(
        limiters: &RateLimiters<FakeRelativeClock>,
        op: Operation,
        extras: &[ExtraBucket],
        count: usize,
    ) -> Vec<Duration> {
        let clock = limiters.clock().clone();
        let start = clock.now();
        (0..count)
            .map(|_| {
                let mut acquisition = Acquisition::new(op, extras);
                while let Err(wait) = limiters.poll(&mut acquisition) {
                    assert!(wait > Duration::ZERO);
                    clock.advance(wait);
                }
                Duration::from(clock.now().duration_since(start))
            })
            .collect()
    }

    /// The largest number of admissions inside any half-open window `[t, t + length)`.
    fn max_in_any_window(times: &[Duration], length: Duration) -> usize {
        times
            .iter()
            .map(|&start| {
                times
                    .iter()
                    .filter(|&&t| t >= start && t < start + length)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn burst_pacing_never_exceeds_the_per_second_limit() {
        let limiters = RateLimiters::with_clock(1.0, FakeRelativeClock::default());
        // UpdateList: 10/s, 150/m.
        let times = admit(&limiters, Operation::UpdateList, &[], 40);
        assert_eq!(
            &times[..5],
            &[Duration::ZERO; 5],
            "half the burst goes out at once"
        );
        assert!(times[5] > Duration::ZERO);
        // The whole per-second allowance is used within the first second...
        assert!(times[9] < SECOND, "{:?}", times[9]);
        // ...and once its initial burst is spent the steady window (150/m, refilled at 141 per
        // minute) sets the pace.
        let gap = times[39] - times[38];
        assert_eq!(gap, Duration::from_nanos(60_000_000_000u64.div_ceil(141)));
        assert!(max_in_any_window(&times, SECOND) <= 10);
        assert!(max_in_any_window(&times, MINUTE) <= 150);
    }

    #[test]
    fn steady_pacing_fills_each_minute_exactly_to_the_limit() {
        let limiters = RateLimiters::with_clock(1.0, FakeRelativeClock::default());
        // CreateSegment: 1/s, 15/m -> one request every 4 s.
        let times = admit(&limiters, Operation::CreateSegment, &[], 31);
        let expected: Vec<Duration> = (0..31).map(|i| Duration::from_secs(4 * i)).collect();
        assert_eq!(times, expected);
        assert_eq!(max_in_any_window(&times, MINUTE), 15);
    }

    #[test]
    fn sustained_rate_stays_within_limits_and_near_them() {
        let limiters = RateLimiters::with_clock(1.0, FakeRelativeClock::default());
        // GetProfiles: 75/s, 750/m.
        let times = admit(&limiters, Operation::GetProfiles, &[], 3000);
        assert!(max_in_any_window(&times, SECOND) <= 75);
        assert!(max_in_any_window(&times, MINUTE) <= 750);
        // Sustained: 750 - 75 + 1 = 676 per minute, so 3000 need about 4.4 minutes.
        let last = *times.last().unwrap();
        assert!(last < Duration::from_secs(5 * 60), "{last:?}");
    }

    #[test]
    fn extra_buckets_are_charged_on_top() {
        let limiters = RateLimiters::with_clock(1.0, FakeRelativeClock::default());
        let times = admit(
            &limiters,
            Operation::GetList,
            &[ExtraBucket::ListProfileCount],
            3,
        );
        // The XS extra bucket (1/s, 15/m) paces GET /lists/{id} far below its own 75/s.
        assert_eq!(
            times,
            vec![
                Duration::ZERO,
                Duration::from_secs(4),
                Duration::from_secs(8)
            ]
        );
        // Without the extra, the same operation only meets its own (barely used) bucket.
        let plain = admit(&limiters, Operation::GetList, &[], 3);
        assert_eq!(plain, vec![Duration::ZERO; 3]);
    }

    #[test]
    fn clones_share_limiter_state() {
        let limiters = RateLimiters::with_clock(1.0, FakeRelativeClock::default());
        let other = limiters.clone();
        let mut first = Acquisition::new(Operation::CreateSegment, &[]);
        assert_eq!(limiters.poll(&mut first), Ok(()));
        let mut second = Acquisition::new(Operation::CreateSegment, &[]);
        let wait = other.poll(&mut second).unwrap_err();
        assert_eq!(wait, Duration::from_secs(4));
        limiters.clock().advance(wait);
        assert_eq!(other.poll(&mut second), Ok(()));
    }

    #[test]
    fn factor_scales_limits() {
        let limiters = RateLimiters::with_clock(2.0, FakeRelativeClock::default());
        let times = admit(&limiters, Operation::CreateSegment, &[], 3);
        // 2/s (one up front, one per 500 ms) and 30/m (two up front, one per 60/29 s), where
        // 1.0 would give one request every 4 s.
        assert_eq!(&times[..2], &[Duration::ZERO, Duration::from_millis(500)]);
        assert!(times[2] > Duration::from_secs(2) && times[2] < Duration::from_secs(3));
    }

    #[test]
    fn daily_cap_fails_fast_and_resets_after_a_day() {
        let limiters = RateLimiters::with_clock(1.0, FakeRelativeClock::default());
        for _ in 0..100 {
            limiters.count_daily(Operation::CreateSegment).unwrap();
        }
        assert_eq!(
            limiters.count_daily(Operation::CreateSegment),
            Err(DailyCapReached {
                operation: Operation::CreateSegment,
                cap: 100
            })
        );
        // Uncapped operations are never refused.
        for _ in 0..1000 {
            limiters.count_daily(Operation::GetLists).unwrap();
        }
        limiters.clock().advance(DAY);
        assert_eq!(limiters.count_daily(Operation::CreateSegment), Ok(()));
    }

    #[test]
    fn window_quota_admits_at_most_the_limit_in_any_window() {
        for (limit, burst) in [
            (1, 1),
            (3, 2),
            (10, 5),
            (15, 1),
            (60, 3),
            (150, 10),
            (750, 75),
        ] {
            let clock = FakeRelativeClock::default();
            let limiter =
                RateLimiter::direct_with_clock(window_quota(limit, burst, MINUTE), clock.clone());
            let mut times = Vec::new();
            let start = clock.now();
            while times.len() < 3 * limit as usize {
                match limiter.check() {
                    Ok(()) => times.push(Duration::from(clock.now().duration_since(start))),
                    Err(not_until) => clock.advance(not_until.wait_time_from(clock.now())),
                }
            }
            assert_eq!(
                max_in_any_window(&times, MINUTE),
                limit as usize,
                "limit {limit}"
            );
        }
    }
}
