//! A faithful, stateful Klaviyo emulator (see `klsync emulator --help`).

use std::net::SocketAddr;

/// How the emulator enforces Klaviyo's rate limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateLimitMode {
    /// Klaviyo's published limits.
    Real,
    /// No rate limiting at all, for fast tests.
    Off,
    /// Published limits multiplied by this factor (2.0 allows twice as many requests).
    Scaled(f64),
}

/// Everything `klsync emulator` needs to start.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Rate-limit enforcement.
    pub rate_limits: RateLimitMode,
    /// Fault-injection spec, e.g. `429=0.1,500=0.05,reset=0.01,latency=50ms`.
    pub faults: Option<String>,
    /// Seed for the fault RNG and id generation.
    pub seed: u64,
    /// File to load state from at start and save it to on shutdown.
    pub state_file: Option<std::path::PathBuf>,
    /// API keys the emulator accepts.
    pub api_keys: Vec<String>,
}
