//! Seeded fault injection: `--faults 429=0.1,500=0.05,reset=0.01,latency=50ms`.
//!
//! Each request draws once from a seeded RNG, so a run with the same seed and the same request
//! sequence sees the same faults. A 500 or a reset on a write is applied either BEFORE the write
//! (nothing changed) or AFTER it (the change is stored, but the client never learns it), chosen
//! by a second draw, because real networks do both and a client must survive both.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A parsed fault specification.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSpec {
    /// Probability of answering 429 with `Retry-After: 1`.
    pub too_many_requests: f64,
    /// Probability of answering 500 with a JSON:API error.
    pub server_error: f64,
    /// Probability of dropping the connection without any response.
    pub reset: f64,
    /// Delay added to every request.
    pub latency: Duration,
}

/// Why a fault spec could not be parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultSpecError {
    /// A term is not `key=value`.
    #[error("fault term `{0}` is not KEY=VALUE (keys: 429, 500, reset, latency)")]
    NotKeyValue(String),
    /// The key is not one of the known faults.
    #[error("unknown fault `{0}` (known: 429, 500, reset, latency)")]
    UnknownKey(String),
    /// A probability is not a number in [0, 1].
    #[error("fault `{key}` needs a probability between 0 and 1, got `{value}`")]
    BadProbability {
        /// The fault key.
        key: String,
        /// The rejected value.
        value: String,
    },
    /// The latency is not `<n>ms` or `<n>s`.
    #[error("latency must look like `50ms` or `2s`, got `{0}`")]
    BadLatency(String),
    /// The probabilities add up to more than 1.
    #[error("fault probabilities add up to {0}, more than 1")]
    TooLikely(f64),
}

impl FaultSpec {
    /// Parses `429=0.1,500=0.05,reset=0.01,latency=50ms`; every term is optional.
    pub fn parse(spec: &str) -> Result<FaultSpec, FaultSpecError> {
        let mut out = FaultSpec::default();
        for term in spec.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (key, value) = term
                .split_once('=')
                .ok_or_else(|| FaultSpecError::NotKeyValue(term.to_owned()))?;
            let (key, value) = (key.trim(), value.trim());
            let probability = || -> Result<f64, FaultSpecError> {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| FaultSpecError::BadProbability {
                        key: key.to_owned(),
                        value: value.to_owned(),
                    })
            };
            match key {
                "429" => out.too_many_requests = probability()?,
                "500" => out.server_error = probability()?,
                "reset" => out.reset = probability()?,
                "latency" => out.latency = parse_latency(value)?,
                other => return Err(FaultSpecError::UnknownKey(other.to_owned())),
            }
        }
        let total = out.too_many_requests + out.server_error + out.reset;
        if total > 1.0 {
            return Err(FaultSpecError::TooLikely(total));
        }
        Ok(out)
    }
}

fn parse_latency(value: &str) -> Result<Duration, FaultSpecError> {
    let bad = || FaultSpecError::BadLatency(value.to_owned());
    if let Some(ms) = value.strip_suffix("ms") {
        ms.parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| bad())
    } else if let Some(s) = value.strip_suffix('s') {
        s.parse::<u64>().map(Duration::from_secs).map_err(|_| bad())
    } else {
        Err(bad())
    }
}

/// When an injected failure strikes relative to the write the request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Nothing was applied.
    BeforeWrite,
    /// The write was applied, then the failure happened.
    AfterWrite,
}

/// The fault chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Serve the request normally.
    None,
    /// Answer 429 with `Retry-After: 1`, nothing applied.
    TooManyRequests,
    /// Answer 500.
    ServerError(Timing),
    /// Drop the connection without a response.
    Reset(Timing),
}

/// Draws faults from a seeded RNG.
#[derive(Debug)]
pub struct FaultInjector {
    spec: FaultSpec,
    rng: StdRng,
}

impl FaultInjector {
    /// An injector for `spec` seeded with `seed`.
    pub fn new(spec: FaultSpec, seed: u64) -> Self {
        FaultInjector {
            spec,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The latency to add to every request.
    pub fn latency(&self) -> Duration {
        self.spec.latency
    }

    /// Chooses the fault for the next request; `is_write` requests may fail after the write.
    pub fn next(&mut self, is_write: bool) -> Fault {
        let draw: f64 = self.rng.random();
        let timing = |rng: &mut StdRng| {
            if is_write && rng.random_bool(0.5) {
                Timing::AfterWrite
            } else {
                Timing::BeforeWrite
            }
        };
        let spec = &self.spec;
        if draw < spec.too_many_requests {
            Fault::TooManyRequests
        } else if draw < spec.too_many_requests + spec.server_error {
            Fault::ServerError(timing(&mut self.rng))
        } else if draw < spec.too_many_requests + spec.server_error + spec.reset {
            Fault::Reset(timing(&mut self.rng))
        } else {
            Fault::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_spec() {
        let spec = FaultSpec::parse("429=0.1, 500=0.05,reset=0.01,latency=50ms").unwrap();
        assert_eq!(
            spec,
            FaultSpec {
                too_many_requests: 0.1,
                server_error: 0.05,
                reset: 0.01,
                latency: Duration::from_millis(50),
            }
        );
        assert_eq!(
            FaultSpec::parse("latency=2s").unwrap().latency,
            Duration::from_secs(2)
        );
        assert_eq!(FaultSpec::parse("").unwrap(), FaultSpec::default());
    }

    #[test]
    fn rejects_bad_specs_clearly() {
        assert_eq!(
            FaultSpec::parse("503=0.1"),
            Err(FaultSpecError::UnknownKey("503".into()))
        );
        assert_eq!(
            FaultSpec::parse("429"),
            Err(FaultSpecError::NotKeyValue("429".into()))
        );
        assert!(matches!(
            FaultSpec::parse("500=1.5"),
            Err(FaultSpecError::BadProbability { .. })
        ));
        assert_eq!(
            FaultSpec::parse("latency=fast"),
            Err(FaultSpecError::BadLatency("fast".into()))
        );
        assert!(matches!(
            FaultSpec::parse("429=0.6,500=0.6"),
            Err(FaultSpecError::TooLikely(_))
        ));
        let message = FaultSpec::parse("500=x").unwrap_err().to_string();
        assert!(message.contains("between 0 and 1"), "{message}");
    }

    #[test]
    fn same_seed_same_faults_and_rates_roughly_match() {
        let spec = FaultSpec::parse("429=0.2,500=0.2,reset=0.2").unwrap();
        let run = |seed| {
            let mut injector = FaultInjector::new(spec.clone(), seed);
            (0..1000).map(|_| injector.next(true)).collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        let none = a.iter().filter(|f| **f == Fault::None).count();
        assert!(
            (300..500).contains(&none),
            "{none} of 1000 were not faulted"
        );
        assert!(a.contains(&Fault::Reset(Timing::AfterWrite)));
        assert!(a.contains(&Fault::ServerError(Timing::BeforeWrite)));
    }

    #[test]
    fn reads_always_fail_before_the_write() {
        let mut injector = FaultInjector::new(FaultSpec::parse("500=1").unwrap(), 1);
        for _ in 0..50 {
            assert_eq!(
                injector.next(false),
                Fault::ServerError(Timing::BeforeWrite)
            );
        }
    }
}
