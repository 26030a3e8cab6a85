//! Client-side pacing to Klaviyo's published rate limits, so a run spends its time waiting
//! locally instead of collecting 429s, and goes as fast as the limits allow.
//!
//! Klaviyo counts requests per bucket in **fixed** windows (1 s burst, 60 s steady) and answers
//! 429 as soon as either window is full. Every [`Operation`] has its own bucket, and a few
//! `include=` / `additional-fields` extras charge a stricter [`ExtraBucket`] as well.
//!
//! # Sliding logs
//! klsync cannot see where the server's windows start, so each window of each bucket is an
//! exact **sliding log**: the times of the last `N` admissions. A request is admitted at `t`
//! when fewer than `N` admissions lie in `(t - T, t]`, else it waits until the oldest of the last
//! `N` is `T` old. Then no interval of length `T` ever holds more than `N` admissions, so no
//! fixed window does either, *whatever its alignment*; and nothing waits that could have gone:
//! for `create_segment` (1/s, 15/min) that is 15 requests one second apart, then the 16th a
//! minute after the first, the same pace as a client that knew the server's windows, at worst.
//!
//! Every window is [`GUARD`] longer than published: a request reaches the server some
//! milliseconds after it is admitted, and those milliseconds vary, so two admissions exactly `T`
//! apart could land less than `T` apart on the server.
//!
//! A request takes its place in every window of every bucket it charges **at once**, at the
//! instant it is admitted (or in none): a place held while waiting for another window would be
//! logged earlier than the request is sent, and the log would then free it too early.
//!
//! # Why not governor's limiters
//! These limiters were governor GCRA limiters until issue 13. GCRA refills a constant rate, so
//! the only configurations that never exceed `N` per fixed window of any alignment are a burst
//! `b` and a refill of `N - b + 1` per `T`: `create_segment` then went out once every 4 s (45 s
//! for 12 segments that fit in 12 s). A sliding log is exact, and as cheap for limits this small
//! (at most 750 instants per window). governor stays for its clocks: the real monotonic
//! one, and [`FakeRelativeClock`](governor::clock::FakeRelativeClock), on which tests and the
//! plan's time estimate ([`crate::plan::cost`]) run these same limiters without sleeping.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::nanos::Nanos;

use klaviyo_spec::operations::{ExtraBucket, Operation, RateLimit};

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// How much longer than published every window is kept: room for the varying delay between
/// admitting a request and its arrival at Klaviyo (see the module docs).
pub const GUARD: Duration = Duration::from_millis(25);

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

/// At most `limit` admissions in any interval of length `window`: the times of the last
/// `limit` admissions, oldest first.
#[derive(Debug, Clone)]
pub struct SlidingLog<I> {
    limit: usize,
    window: Duration,
    admitted: VecDeque<I>,
}

impl<I: Reference> SlidingLog<I> {
    /// A log admitting `limit` (at least one) per `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        SlidingLog {
            limit,
            window,
            admitted: VecDeque::new(),
        }
    }

    /// How long from `now` until one more admission fits; zero when it fits now.
    pub fn wait(&self, now: I) -> Duration {
        if self.admitted.len() < self.limit {
            return Duration::ZERO;
        }
        // The oldest of the last `limit`: the next admission must be a full window after it.
        let oldest = self.admitted[self.admitted.len() - self.limit];
        let free_at = oldest + Nanos::from(self.window);
        if free_at <= now {
            Duration::ZERO
        } else {
            Duration::from(free_at.duration_since(now))
        }
    }

    /// Record an admission at `now` (which [`SlidingLog::wait`] said fits).
    pub fn admit(&mut self, now: I) {
        self.admitted.push_back(now);
        while self.admitted.len() > self.limit {
            self.admitted.pop_front();
        }
    }
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

/// The two windows of one bucket.
struct Windows<I> {
    burst: SlidingLog<I>,
    steady: SlidingLog<I>,
}

impl<I: Reference> Windows<I> {
    fn new(bucket: Bucket, factor: f64) -> Self {
        let limit = bucket.rate_limit();
        Windows {
            burst: SlidingLog::new(scaled(limit.burst_per_second, factor), SECOND + GUARD),
            steady: SlidingLog::new(scaled(limit.steady_per_minute, factor), MINUTE + GUARD),
        }
    }

    fn wait(&self, now: I) -> Duration {
        self.burst.wait(now).max(self.steady.wait(now))
    }

    fn admit(&mut self, now: I) {
        self.burst.admit(now);
        self.steady.admit(now);
    }
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
    /// Every bucket's windows behind one lock, so a request is admitted in all of them at once.
    windows: Mutex<HashMap<Bucket, Windows<C::Instant>>>,
    daily: Mutex<HashMap<Operation, DailyWindow<C::Instant>>>,
}

impl RateLimiters<DefaultClock> {
    /// Limiters on the real clock; `factor` scales every published limit (1.0 = as published).
    pub fn new(factor: f64) -> Self {
        Self::with_clock(factor, DefaultClock::default())
    }
}

impl<C: Clock> RateLimiters<C> {
    /// Limiters on the given clock; `factor` scales every published limit.
    pub fn with_clock(factor: f64, clock: C) -> Self {
        RateLimiters {
            inner: Arc::new(Inner {
                clock,
                factor,
                windows: Mutex::new(HashMap::new()),
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

    /// Admit the request `acquisition` stands for, in every window of every bucket it charges,
    /// or say how long until all of them have room (`Err(wait)`, never zero): wait, then call
    /// again. Once admitted, polling again admits nothing more, so a request is never charged
    /// twice.
    pub fn poll(&self, acquisition: &mut Acquisition) -> Result<(), Duration> {
        if acquisition.admitted {
            return Ok(());
        }
        let now = self.inner.clock.now();
        let factor = self.inner.factor;
        let mut windows = self.inner.windows.lock().unwrap_or_else(|e| e.into_inner());
        let wait = acquisition
            .buckets
            .iter()
            .map(|&bucket| {
                windows
                    .entry(bucket)
                    .or_insert_with(|| Windows::new(bucket, factor))
                    .wait(now)
            })
            .max()
            .unwrap_or(Duration::ZERO);
        if wait > Duration::ZERO {
            return Err(wait);
        }
        for bucket in &acquisition.buckets {
            if let Some(bucket) = windows.get_mut(bucket) {
                bucket.admit(now);
            }
        }
        acquisition.admitted = true;
        Ok(())
    }

    /// The clock the limiters run on.
    pub fn clock(&self) -> &C {
        &self.inner.clock
    }
}

/// The buckets one request charges, and whether it was admitted.
#[derive(Debug, Clone)]
pub struct Acquisition {
    buckets: Vec<Bucket>,
    admitted: bool,
}

impl Acquisition {
    /// What a request for `operation` with the given extra buckets charges.
    pub fn new(operation: Operation, extras: &[ExtraBucket]) -> Self {
        let mut buckets: Vec<Bucket> = extras.iter().map(|&extra| Bucket::Extra(extra)).collect();
        buckets.dedup();
        buckets.push(Bucket::Operation(operation));
        Acquisition {
            buckets,
            admitted: false,
        }
    }

    /// The buckets this acquisition charges.
    pub fn buckets(&self) -> Vec<Bucket> {
        self.buckets.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    const GUARDED_SECOND: Duration = Duration::from_millis(1_025);
    const GUARDED_MINUTE: Duration = Duration::from_millis(60_025);

    /// Admit `count` requests as fast as the limiters allow, advancing the fake clock by each
    /// wait; returns the admission times.
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

    /// The most admissions any fixed window of `length` starting at `offset + k * length` holds.
    fn max_in_fixed_windows(times: &[Duration], length: Duration, offset: Duration) -> usize {
        let mut counts: HashMap<u128, usize> = HashMap::new();
        for t in times {
            let shifted = (*t + length - offset).as_nanos();
            *counts.entry(shifted / length.as_nanos()).or_default() += 1;
        }
        counts.into_values().max().unwrap_or(0)
    }

    #[test]
    fn burst_then_steady_then_the_next_window() {
        let limiters = RateLimiters::with_clock(1.0, FakeRelativeClock::default());
        // create_segment: 1/s, 15/min. Fifteen one (guarded) second apart, then the 16th a
        // (guarded) minute after the first, the next fourteen a second apart again.
        let times = admit(&limiters, Operation::CreateSegment, &[], 31);
        let mut expected: Vec<Duration> = (0..15).map(|i| GUARDED_SECOND * i).collect();
        expected.extend((0..15).map(|i| GUARDED_MINUTE + GUARDED_SECOND * i));
        expected.push(GUARDED_MINUTE * 2);
        assert_eq!(times, expected);
        assert_eq!(max_in_any_window(&times, MINUTE), 15);
        assert_eq!(max_in_any_window(&times, SECOND), 1);
    }

    #[test]
    fn a_whole_burst_goes_out_at_once() {
        let limiters = RateLimiters::with_clock(1.0, FakeRelativeClock::default());
        // update_list: 10/s, 150/min.
        let times = admit(&limiters, Operation::UpdateList, &[], 160);
        assert_eq!(&times[..10], &[Duration::ZERO; 10]);
        assert_eq!(times[10], GUARDED_SECOND);
        // 150 in 15 bursts, then the 151st a minute after the first burst.
        assert_eq!(times[149], GUARDED_SECOND * 14);
        assert_eq!(times[150], GUARDED_MINUTE);
        assert_eq!(max_in_any_window(&times, SECOND), 10);
        assert_eq!(max_in_any_window(&times, MINUTE), 150);
    }

    #[test]
    fn no_fixed_window_of_any_alignment_is_overfilled() {
        // Requests arriving at irregular times (a pseudo-random walk), as a busy run sends them.
        for (op, burst, steady) in [
            (Operation::CreateSegment, 1, 15),
            (Operation::CreateTag, 3, 60),
            (Operation::UpdateList, 10, 150),
            (Operation::GetProfiles, 75, 750),
        ] {
            let limiters = RateLimiters::with_clock(1.0, FakeRelativeClock::default());
            let clock = limiters.clock().clone();
            let start = clock.now();
            let mut state = 0x2545_f491_4f6c_dd1d_u64;
            let mut times = Vec::new();
            for _ in 0..(steady * 3) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                clock.advance(Duration::from_millis(state % 700) / burst);
                let mut acquisition = Acquisition::new(op, &[]);
                while let Err(wait) = limiters.poll(&mut acquisition) {
                    clock.advance(wait);
                }
                times.push(Duration::from(clock.now().duration_since(start)));
            }
            assert!(
                max_in_any_window(&times, MINUTE) <= steady as usize,
                "{op:?}"
            );
            assert!(
                max_in_any_window(&times, SECOND) <= burst as usize,
                "{op:?}"
            );
            for offset_ms in [0, 1, 250, 999, 17_333, 59_999] {
                let offset = Duration::from_millis(offset_ms);
                assert!(max_in_fixed_windows(&times, MINUTE, offset) <= steady as usize);
                let offset = Duration::from_millis(offset_ms % 1000);
                assert!(max_in_fixed_windows(&times, SECOND, offset) <= burst as usize);
            }
        }
    }

    #[test]
    fn the_log_waits_exactly_until_the_oldest_leaves() {
        let clock = FakeRelativeClock::default();
        let mut log = SlidingLog::new(2, SECOND);
        log.admit(clock.now());
        clock.advance(Duration::from_millis(300));
        assert_eq!(log.wait(clock.now()), Duration::ZERO);
        log.admit(clock.now());
        assert_eq!(log.wait(clock.now()), Duration::from_millis(700));
        clock.advance(Duration::from_millis(700));
        assert_eq!(log.wait(clock.now()), Duration::ZERO);
        log.admit(clock.now());
        // Now the second admission (at 300 ms) is the oldest of the last two.
        assert_eq!(log.wait(clock.now()), Duration::from_millis(300));
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
        // The XS extra bucket (1/s, 15/min) paces GET /lists/{id} far below its own 75/s.
        assert_eq!(
            times,
            vec![Duration::ZERO, GUARDED_SECOND, GUARDED_SECOND * 2]
        );
        // Without the extra, the same operation only meets its own (barely used) bucket.
        let plain = admit(&limiters, Operation::GetList, &[], 3);
        assert_eq!(plain, vec![Duration::ZERO; 3]);
    }

    #[test]
    fn a_refused_request_holds_no_place_and_an_admitted_one_is_charged_once() {
        let limiters = RateLimiters::with_clock(1.0, FakeRelativeClock::default());
        let clock = limiters.clock().clone();
        // Fill the extra bucket's burst window through GET /lists/{id}.
        let mut counted = Acquisition::new(Operation::GetList, &[ExtraBucket::ListProfileCount]);
        assert_eq!(limiters.poll(&mut counted), Ok(()));
        // Polling an admitted request again charges nothing.
        for _ in 0..100 {
            assert_eq!(limiters.poll(&mut counted), Ok(()));
        }
        let mut waiting = Acquisition::new(Operation::GetList, &[ExtraBucket::ListProfileCount]);
        assert_eq!(limiters.poll(&mut waiting), Err(GUARDED_SECOND));
        // The refused request took no place in get_list's own bucket: 74 plain reads still fit
        // in this second (75/s, one used by the first request).
        assert_eq!(
            admit(&limiters, Operation::GetList, &[], 74),
            vec![Duration::ZERO; 74]
        );
        clock.advance(GUARDED_SECOND);
        assert_eq!(limiters.poll(&mut waiting), Ok(()));
    }

    #[test]
    fn clones_share_limiter_state() {
        let limiters = RateLimiters::with_clock(1.0, FakeRelativeClock::default());
        let other = limiters.clone();
        let mut first = Acquisition::new(Operation::CreateSegment, &[]);
        assert_eq!(limiters.poll(&mut first), Ok(()));
        let mut second = Acquisition::new(Operation::CreateSegment, &[]);
        let wait = other.poll(&mut second).unwrap_err();
        assert_eq!(wait, GUARDED_SECOND);
        limiters.clock().advance(wait);
        assert_eq!(other.poll(&mut second), Ok(()));
    }

    #[test]
    fn factor_scales_limits() {
        let limiters = RateLimiters::with_clock(2.0, FakeRelativeClock::default());
        // 2/s and 30/min where 1.0 gives 1/s and 15/min.
        let times = admit(&limiters, Operation::CreateSegment, &[], 31);
        assert_eq!(
            &times[..3],
            &[Duration::ZERO, Duration::ZERO, GUARDED_SECOND]
        );
        assert_eq!(times[29], GUARDED_SECOND * 14);
        assert_eq!(times[30], GUARDED_MINUTE);
        let tiny = RateLimiters::with_clock(0.01, FakeRelativeClock::default());
        // Never below one per window: 1/s and 1/min.
        let times = admit(&tiny, Operation::UpdateList, &[], 2);
        assert_eq!(times, vec![Duration::ZERO, GUARDED_MINUTE]);
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
}
