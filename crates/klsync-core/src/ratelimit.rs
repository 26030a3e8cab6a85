//! Client-side pacing to Klaviyo's published rate limits, so a run spends its time waiting
//! locally instead of collecting 429s, and goes as fast as the limits allow.
//!
//! Klaviyo counts requests per bucket in **fixed** windows (1 s burst, 60 s steady) and answers
//! 429 as soon as either window is full. Every [`Operation`] has its own bucket, and a few
//! `include=` / `additional-fields` extras charge a stricter [`ExtraBucket`] as well.
//!
//! # Sliding logs, timed by the answers
//! klsync cannot see where the server's windows start, nor exactly when a request reaches the
//! server: only that it arrives after klsync sent it and before klsync hears the answer. So each
//! window of each bucket is a **sliding log of answers**: the requests in flight, and the times
//! the others were answered. A request is admitted at `t` when fewer than `N` requests are in
//! flight or were answered within `(t - T, t]`; else it waits until enough of those answers are
//! `T` old. Then no two requests closer than `T` on the server can both have been counted in one
//! window beside `N - 1` others: whatever the delay of each request, whatever the alignment of
//! the server's windows, no fixed window of length `T` ever receives more than `N` (proof in
//! [`SlidingLog`]). Nothing waits that could have gone, except by the answer time: for
//! `create_segment` (1/s, 15/min) that is 15 requests one second (plus an answer time) apart,
//! then the 16th a minute after the first answer.
//!
//! Until 2026-12 the log held admission times and every window was 25 ms longer than published,
//! for the delay between admitting a request and its arrival. On a busy machine that delay varies
//! by more than 25 ms (64 reads in flight on 2 shared cores), and two reads admitted 1.03 s apart
//! reached the emulator inside one second: a 429. Over the internet the spread is larger still.
//! Timing by the answer needs no guess.
//!
//! A request takes its place in every window of every bucket it charges **at once**, at the
//! instant it is admitted (or in none): a place held while waiting for another window would be
//! freed too early. It keeps the place until it is answered (or abandoned: see [`InFlight`]).
//!
//! # Why not governor's limiters
//! These limiters were governor GCRA limiters until issue 13. GCRA refills a constant rate, so
//! the only configurations that never exceed `N` per fixed window of any alignment are a burst
//! `b` and a refill of `N - b + 1` per `T`: `create_segment` then went out once every 4 s (45 s
//! for 12 segments that fit in 12 s). A sliding log is exact, and as cheap for limits this small
//! (at most 3,500 instants per window). governor stays for its clocks: the real monotonic
//! one, and [`FakeRelativeClock`](governor::clock::FakeRelativeClock), on which tests and the
//! plan's time estimate ([`crate::plan::cost`]) run these same limiters without sleeping,
//! taking every request to be answered [`MODELLED_ANSWER_TIME`] after it is admitted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::nanos::Nanos;

use klaviyo_spec::operations::{ExtraBucket, Operation, RateLimit};

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// How long after admission the plan's time estimate takes Klaviyo to answer a request (the
/// real answer time paces `apply`; see the module docs). Each burst window of a bucket that is
/// kept full is then one second plus this.
pub const MODELLED_ANSWER_TIME: Duration = Duration::from_millis(25);

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

/// At most `limit` requests counted by the server in any fixed window of length `window`,
/// whatever the window's alignment and each request's delay: the requests in flight, and when
/// the others were answered.
///
/// Why it holds: take any server window holding a set `S` of arrivals, and `j` the member of
/// `S` admitted last, at `t`. Every other member `i` was admitted no later than `t`, and arrived
/// after `arrival(j) - window >= t - window`; it was answered after it arrived, so at `t` it was
/// either in flight or answered within `(t - window, t]`. All of them were counted when `j` was
/// admitted, which needs fewer than `limit` of them: `S` holds at most `limit`.
#[derive(Debug, Clone)]
pub struct SlidingLog<I> {
    limit: usize,
    window: Duration,
    /// Admitted and not yet answered: any of them may still be counted at any later instant.
    in_flight: usize,
    /// When the other requests were answered, ascending, the last `window` of them.
    answered: VecDeque<I>,
}

impl<I: Reference> SlidingLog<I> {
    /// A log admitting `limit` (at least one) per `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        SlidingLog {
            limit,
            window,
            in_flight: 0,
            answered: VecDeque::new(),
        }
    }

    /// How long from `now` until one more admission fits; zero when it fits now. With `limit`
    /// requests in flight the answer is one window, the least it can be (an answer comes at
    /// `now` or later); asking again then tells the rest.
    pub fn wait(&mut self, now: I) -> Duration {
        while let Some(&oldest) = self.answered.front() {
            if oldest + Nanos::from(self.window) > now {
                break;
            }
            self.answered.pop_front();
        }
        let counted = self.in_flight + self.answered.len();
        if counted < self.limit {
            return Duration::ZERO;
        }
        // Enough answers must leave the window that one more fits.
        let leaving = counted + 1 - self.limit;
        match self.answered.get(leaving - 1) {
            Some(&last_to_leave) => {
                Duration::from((last_to_leave + Nanos::from(self.window)).duration_since(now))
            }
            None => self.window,
        }
    }

    /// Record an admission (which [`SlidingLog::wait`] said fits): in flight until answered.
    pub fn admit(&mut self) {
        self.in_flight += 1;
    }

    /// Record the answer, at `at`, of a request admitted earlier.
    pub fn answer(&mut self, at: I) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let position = self.answered.partition_point(|&answered| answered <= at);
        self.answered.insert(position, at);
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
            burst: SlidingLog::new(scaled(limit.burst_per_second, factor), SECOND),
            steady: SlidingLog::new(scaled(limit.steady_per_minute, factor), MINUTE),
        }
    }

    fn wait(&mut self, now: I) -> Duration {
        self.burst.wait(now).max(self.steady.wait(now))
    }

    fn admit(&mut self) {
        self.burst.admit();
        self.steady.admit();
    }

    fn answer(&mut self, at: I) {
        self.burst.answer(at);
        self.steady.answer(at);
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
        if acquisition.state != State::Waiting {
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
                bucket.admit();
            }
        }
        acquisition.state = State::InFlight;
        Ok(())
    }

    /// Record that the request `acquisition` stands for was answered now (or failed, or was
    /// abandoned). Only an admitted, unanswered request is recorded, once.
    pub fn answered(&self, acquisition: &mut Acquisition) {
        self.answered_at(acquisition, self.inner.clock.now());
    }

    /// [`RateLimiters::answered`] at a given instant (the time estimate's model of an answer).
    pub fn answered_at(&self, acquisition: &mut Acquisition, at: C::Instant) {
        if acquisition.state != State::InFlight {
            return;
        }
        let mut windows = self.inner.windows.lock().unwrap_or_else(|e| e.into_inner());
        for bucket in &acquisition.buckets {
            if let Some(bucket) = windows.get_mut(bucket) {
                bucket.answer(at);
            }
        }
        acquisition.state = State::Answered;
    }

    /// Wait until `acquisition` is admitted, sleeping with `sleep`; returns the request's place in
    /// the windows, given back (as answered) when dropped. Dropping it at the answer, or when
    /// the request fails or is abandoned, is what keeps a cancelled request from holding its
    /// place for ever.
    pub async fn admit<F, S>(&self, mut acquisition: Acquisition, sleep: S) -> InFlight<C>
    where
        S: Fn(Duration) -> F,
        F: std::future::Future<Output = ()>,
    {
        while let Err(wait) = self.poll(&mut acquisition) {
            sleep(wait).await;
        }
        InFlight {
            limiters: self.clone(),
            acquisition,
        }
    }

    /// The clock the limiters run on.
    pub fn clock(&self) -> &C {
        &self.inner.clock
    }
}

/// An admitted request's place in the limiters' windows; dropping it records the answer.
pub struct InFlight<C: Clock = DefaultClock> {
    limiters: RateLimiters<C>,
    acquisition: Acquisition,
}

impl<C: Clock> Drop for InFlight<C> {
    fn drop(&mut self) {
        self.limiters.answered(&mut self.acquisition);
    }
}

/// Where a request stands with the limiters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight,
    Answered,
}

/// The buckets one request charges, and where it stands.
#[derive(Debug, Clone)]
pub struct Acquisition {
    buckets: Vec<Bucket>,
    state: State,
}

impl Acquisition {
    /// What a request for `operation` with the given extra buckets charges.
    pub fn new(operation: Operation, extras: &[ExtraBucket]) -> Self {
        let mut buckets: Vec<Bucket> = extras.iter().map(|&extra| Bucket::Extra(extra)).collect();
        buckets.dedup();
        buckets.push(Bucket::Operation(operation));
        Acquisition {
            buckets,
            state: State::Waiting,
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

    /// How long after admission the tests' requests are answered.
    const ANSWER: Duration = Duration::from_millis(25);
    const GUARDED_SECOND: Duration = Duration::from_millis(1_025);
    const GUARDED_MINUTE: Duration = Duration::from_millis(60_025);

    /// Record the answer of `acquisition`, [`ANSWER`] after now.
    fn answer_soon(limiters: &RateLimiters<FakeRelativeClock>, acquisition: &mut Acquisition) {
        let at = limiters.clock().now() + Nanos::from(ANSWER);
        limiters.answered_at(acquisition, at);
    }

    /// Admit `count` requests as fast as the limiters allow, advancing the fake clock by each
    /// wait, each answered [`ANSWER`] after its admission; returns the admission times.
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
                answer_soon(limiters, &mut acquisition);
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
    fn no_fixed_window_of_any_alignment_is_overfilled_whatever_the_delays() {
        // Requests sent at irregular times (a pseudo-random walk), as a busy run sends them, each
        // answered 0 to 600 ms after it is sent and counted by the server at any moment between
        // (here: a pseudo-random point), many in flight at once. The server's windows must never
        // hold more than the limit, wherever they start.
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
            let mut random = move |below: u64| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % below
            };
            let mut arrivals = Vec::new();
            // (answer time, acquisition), answered once the clock reaches them.
            let mut in_flight: Vec<(Duration, Acquisition)> = Vec::new();
            let now = |clock: &FakeRelativeClock| Duration::from(clock.now().duration_since(start));
            let answer_due = |in_flight: &mut Vec<(Duration, Acquisition)>, now: Duration| {
                in_flight.retain_mut(|(at, acquisition)| {
                    let due = *at <= now;
                    if due {
                        limiters.answered_at(acquisition, start + Nanos::from(*at));
                    }
                    !due
                });
            };
            for _ in 0..(steady * 3) {
                clock.advance(Duration::from_millis(random(700)) / burst);
                answer_due(&mut in_flight, now(&clock));
                let mut acquisition = Acquisition::new(op, &[]);
                while let Err(wait) = limiters.poll(&mut acquisition) {
                    // Answers due before the wait ends come first, as they would.
                    let until = now(&clock) + wait;
                    let next_answer = in_flight.iter().map(|(at, _)| *at).min();
                    match next_answer {
                        Some(at) if at < until => clock.advance(at.saturating_sub(now(&clock))),
                        _ => clock.advance(wait),
                    }
                    answer_due(&mut in_flight, now(&clock));
                }
                let sent = now(&clock);
                let delay = Duration::from_millis(random(600));
                let counted = delay.mul_f64(random(1000) as f64 / 1000.0);
                arrivals.push(sent + counted);
                in_flight.push((sent + delay, acquisition));
            }
            arrivals.sort();
            for offset_ms in [0, 1, 250, 999, 17_333, 59_999] {
                let offset = Duration::from_millis(offset_ms);
                assert!(
                    max_in_fixed_windows(&arrivals, MINUTE, offset) <= steady as usize,
                    "{op:?}"
                );
                let offset = Duration::from_millis(offset_ms % 1000);
                assert!(
                    max_in_fixed_windows(&arrivals, SECOND, offset) <= burst as usize,
                    "{op:?}"
                );
            }
            assert!(
                max_in_any_window(&arrivals, SECOND) <= burst as usize,
                "{op:?}"
            );
        }
    }

    #[test]
    fn admission_times_alone_would_overfill_a_window_when_delays_vary() {
        // The case the answers fix: two create_segment requests (1/s) sent 1.03 s apart, the
        // first delayed 60 ms on its way, the second not, reach the server 0.97 s apart. Timed
        // by its answer, the first holds its place until 1 s after it was answered.
        let limiters = RateLimiters::with_clock(1.0, FakeRelativeClock::default());
        let clock = limiters.clock().clone();
        let mut first = Acquisition::new(Operation::CreateSegment, &[]);
        assert_eq!(limiters.poll(&mut first), Ok(()));
        clock.advance(Duration::from_millis(80));
        limiters.answered(&mut first);
        clock.advance(Duration::from_millis(950));
        let mut second = Acquisition::new(Operation::CreateSegment, &[]);
        assert_eq!(
            limiters.poll(&mut second),
            Err(Duration::from_millis(50)),
            "1.03 s after the first was sent, 0.95 s after it was answered"
        );
    }

    #[test]
    fn a_request_in_flight_holds_its_place_until_answered() {
        let mut log = SlidingLog::new(1, SECOND);
        let clock = FakeRelativeClock::default();
        log.admit();
        clock.advance(Duration::from_secs(5));
        // Still unanswered: its answer can only come now or later.
        assert_eq!(log.wait(clock.now()), SECOND);
        log.answer(clock.now());
        assert_eq!(log.wait(clock.now()), SECOND);
        clock.advance(SECOND);
        assert_eq!(log.wait(clock.now()), Duration::ZERO);
    }

    #[test]
    fn the_log_waits_exactly_until_enough_answers_leave() {
        let clock = FakeRelativeClock::default();
        let mut log = SlidingLog::new(2, SECOND);
        log.admit();
        log.admit();
        clock.advance(Duration::from_millis(300));
        log.answer(clock.now());
        assert_eq!(
            log.wait(clock.now()),
            SECOND,
            "one answered at 300 ms, one in flight"
        );
        clock.advance(Duration::from_millis(100));
        log.answer(clock.now());
        // Answers at 300 and 400 ms: one more fits once the first is a second old.
        assert_eq!(log.wait(clock.now()), Duration::from_millis(900));
        clock.advance(Duration::from_millis(900));
        assert_eq!(log.wait(clock.now()), Duration::ZERO);
        log.admit();
        // In flight, and the answer at 400 ms: the answer leaves first.
        assert_eq!(log.wait(clock.now()), Duration::from_millis(100));
        // Answers out of order are kept in order.
        log.answer(
            clock
                .now()
                .saturating_sub(Nanos::from(Duration::from_millis(50))),
        );
        assert_eq!(log.wait(clock.now()), Duration::from_millis(100));
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
        // Polling an admitted request again charges nothing; nor does answering it twice.
        for _ in 0..100 {
            assert_eq!(limiters.poll(&mut counted), Ok(()));
        }
        answer_soon(&limiters, &mut counted);
        answer_soon(&limiters, &mut counted);
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
        answer_soon(&limiters, &mut first);
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
