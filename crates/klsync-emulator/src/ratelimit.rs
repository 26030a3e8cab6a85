//! Klaviyo's rate limiting: fixed windows of one second (burst), one minute (steady) and one day,
//! counted per bucket. A bucket is an operation, or one of the stricter extra buckets a request
//! joins when it asks for expensive extras (`include=lists`, `additional-fields[list]=profile_count`).
//!
//! Only admitted requests are counted, so a client that keeps retrying too early is not punished
//! beyond the window it already exhausted.

use std::collections::HashMap;
use std::sync::Arc;

use klaviyo_spec::operations::RateLimit;

use super::RateLimitMode;
use super::clock::Clock;

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;

/// The outcome of asking the limiter to admit one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Admitted; the values describe the steady (minute) window of the primary bucket.
    Allowed {
        /// `RateLimit-Limit`.
        limit: u32,
        /// `RateLimit-Remaining`.
        remaining: u32,
        /// `RateLimit-Reset`, whole seconds until the steady window restarts.
        reset_seconds: u64,
    },
    /// Refused; retry after this many whole seconds.
    Limited {
        /// `Retry-After`.
        retry_after_seconds: u64,
    },
}

/// One bucket a request must fit into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Stable bucket name, e.g. `get_list` or `get_list:profile_count`.
    pub name: String,
    /// The published limit of the bucket.
    pub limit: RateLimit,
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    start_ms: u64,
    count: u32,
}

/// Fixed-window limiter over named buckets.
#[derive(Debug)]
pub struct Limiter {
    mode: RateLimitMode,
    clock: Arc<dyn Clock>,
    windows: HashMap<(String, u64), Window>,
}

impl Limiter {
    /// A limiter enforcing `mode`, reading time from `clock`.
    pub fn new(mode: RateLimitMode, clock: Arc<dyn Clock>) -> Self {
        Limiter {
            mode,
            clock,
            windows: HashMap::new(),
        }
    }

    fn scaled(&self, value: u32) -> u32 {
        match self.mode {
            RateLimitMode::Scaled(factor) => {
                let scaled = (f64::from(value) * factor).floor();
                if scaled < 1.0 {
                    1
                } else if scaled >= f64::from(u32::MAX) {
                    u32::MAX
                } else {
                    // The range was checked just above.
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let v = scaled as u32;
                    v
                }
            }
            _ => value,
        }
    }

    fn windows_of(&self, limit: RateLimit) -> Vec<(u64, u32)> {
        let mut out = vec![
            (SECOND_MS, self.scaled(limit.burst_per_second)),
            (MINUTE_MS, self.scaled(limit.steady_per_minute)),
        ];
        if let Some(daily) = limit.daily {
            out.push((DAY_MS, self.scaled(daily)));
        }
        out
    }

    /// Admits the request if every window of every bucket has room, counting it in all of them.
    /// The first bucket is the primary one reported in the `RateLimit-*` headers.
    pub fn check(&mut self, buckets: &[Bucket]) -> Decision {
        let now = self.clock.now_millis();
        if self.mode == RateLimitMode::Off || buckets.is_empty() {
            return Decision::Allowed {
                limit: 0,
                remaining: 0,
                reset_seconds: 0,
            };
        }
        let mut retry_after_ms: Option<u64> = None;
        for bucket in buckets {
            for (size, limit) in self.windows_of(bucket.limit) {
                let start = now - now % size;
                let window = self.windows.get(&(bucket.name.clone(), size));
                let count = match window {
                    Some(w) if w.start_ms == start => w.count,
                    _ => 0,
                };
                if count >= limit {
                    let wait = start + size - now;
                    retry_after_ms = Some(retry_after_ms.map_or(wait, |w| w.max(wait)));
                }
            }
        }
        if let Some(wait) = retry_after_ms {
            return Decision::Limited {
                retry_after_seconds: wait.div_ceil(SECOND_MS).max(1),
            };
        }
        for bucket in buckets {
            for (size, _) in self.windows_of(bucket.limit) {
                let start = now - now % size;
                let window = self.windows.entry((bucket.name.clone(), size)).or_default();
                if window.start_ms != start {
                    *window = Window {
                        start_ms: start,
                        count: 0,
                    };
                }
                window.count += 1;
            }
        }
        let primary = &buckets[0];
        let limit = self.scaled(primary.limit.steady_per_minute);
        let start = now - now % MINUTE_MS;
        let used = self
            .windows
            .get(&(primary.name.clone(), MINUTE_MS))
            .map_or(0, |w| w.count);
        Decision::Allowed {
            limit,
            remaining: limit.saturating_sub(used),
            reset_seconds: (start + MINUTE_MS - now).div_ceil(SECOND_MS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    fn bucket(name: &str, burst: u32, steady: u32, daily: Option<u32>) -> Bucket {
        Bucket {
            name: name.into(),
            limit: RateLimit {
                burst_per_second: burst,
                steady_per_minute: steady,
                daily,
            },
        }
    }

    fn limiter(mode: RateLimitMode, clock: &FakeClock) -> Limiter {
        Limiter::new(mode, Arc::new(clock.clone()))
    }

    #[test]
    fn burst_window_refuses_then_reopens_next_second() {
        let clock = FakeClock::new(1_000_000);
        let mut limiter = limiter(RateLimitMode::Real, &clock);
        let b = [bucket("create_tag", 3, 60, None)];
        for expected_remaining in [59, 58, 57] {
            assert!(matches!(
                limiter.check(&b),
                Decision::Allowed { limit: 60, remaining, .. } if remaining == expected_remaining
            ));
        }
        assert_eq!(
            limiter.check(&b),
            Decision::Limited {
                retry_after_seconds: 1
            }
        );
        clock.advance(1_000);
        assert!(matches!(limiter.check(&b), Decision::Allowed { .. }));
    }

    #[test]
    fn steady_window_reports_seconds_until_minute_ends() {
        let clock = FakeClock::new(60_000 * 10);
        let mut limiter = limiter(RateLimitMode::Real, &clock);
        let b = [bucket("x", 100, 2, None)];
        assert!(matches!(
            limiter.check(&b),
            Decision::Allowed {
                remaining: 1,
                reset_seconds: 60,
                ..
            }
        ));
        clock.advance(500);
        limiter.check(&b);
        clock.advance(14_500);
        assert_eq!(
            limiter.check(&b),
            Decision::Limited {
                retry_after_seconds: 45
            }
        );
        clock.advance(45_000);
        assert!(matches!(limiter.check(&b), Decision::Allowed { .. }));
    }

    #[test]
    fn daily_cap_gives_long_retry_after() {
        let clock = FakeClock::new(0);
        let mut limiter = limiter(RateLimitMode::Real, &clock);
        let b = [bucket("create_list", 1000, 1000, Some(2))];
        limiter.check(&b);
        limiter.check(&b);
        match limiter.check(&b) {
            Decision::Limited {
                retry_after_seconds,
            } => assert_eq!(retry_after_seconds, 86_400),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn extra_bucket_is_enforced_alongside_the_primary() {
        let clock = FakeClock::new(0);
        let mut limiter = limiter(RateLimitMode::Real, &clock);
        let plain = [bucket("get_list", 75, 750, None)];
        let counted = [
            bucket("get_list", 75, 750, None),
            bucket("get_list:profile_count", 1, 15, None),
        ];
        assert!(matches!(limiter.check(&counted), Decision::Allowed { .. }));
        assert!(matches!(limiter.check(&counted), Decision::Limited { .. }));
        assert!(matches!(limiter.check(&plain), Decision::Allowed { .. }));
    }

    #[test]
    fn off_admits_everything_and_factor_scales() {
        let clock = FakeClock::new(0);
        let mut off = limiter(RateLimitMode::Off, &clock);
        let b = [bucket("x", 1, 1, Some(1))];
        for _ in 0..100 {
            assert!(matches!(off.check(&b), Decision::Allowed { .. }));
        }
        let mut doubled = limiter(RateLimitMode::Scaled(2.0), &clock);
        assert!(matches!(doubled.check(&b), Decision::Allowed { .. }));
        assert!(matches!(doubled.check(&b), Decision::Allowed { .. }));
        assert!(matches!(doubled.check(&b), Decision::Limited { .. }));
        let mut tiny = limiter(RateLimitMode::Scaled(0.01), &clock);
        assert!(matches!(tiny.check(&b), Decision::Allowed { .. }));
        assert!(matches!(tiny.check(&b), Decision::Limited { .. }));
    }
}
