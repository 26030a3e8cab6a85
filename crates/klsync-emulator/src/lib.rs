//! A faithful, stateful Klaviyo emulator (see `klsync emulator --help`): a library the tests,
//! benchmarks and `klsync demo` start in process, and the `klsync-emulator` binary.
//!
//! It serves the `/api` endpoints klsync uses with Klaviyo's JSON:API shapes, strictness
//! (auth, `revision`, media types, body validation), cursor pagination, per-operation rate
//! limits and account limits, plus seeded fault injection. Two admin endpoints need no auth and
//! are not counted: `GET /__emulator/stats` and `POST /__emulator/reset` (`?state=true` also
//! empties the account back to its default tag group).
//!
//! Choices where Klaviyo's behaviour is unconfirmed, documented once here:
//! - An unknown profile id in a list add/remove, or an unknown list/segment in a tag link, is a
//!   400 pointing at `/data/{i}/id`; nothing is applied.
//! - Segment membership is computed on read (see [`segments`]); `is_processing` is always false.
//! - An injected 500 or reset on a write happens before or after the write, at random (see
//!   [`faults`]); stats count a dropped connection under status `"reset"`.
//! - Deleting the default tag group is a 400.

// Library crates document every public item (issue 14); the workspace lints cover the rest.
#![warn(missing_docs)]

pub mod cli;
pub mod clock;
pub mod faults;
pub mod filter;
pub mod handlers;
pub mod ids;
pub mod jsonapi;
pub mod modes;
pub mod ratelimit;
pub mod segments;
pub mod server;
pub mod spec;
pub mod state;
pub mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use faults::{FaultSpec, FaultSpecError};
pub use modes::{ImportErrorShape, Modes};
pub use state::State;
pub use stats::StatsSnapshot;

use server::{App, Conn, KillableListener, lock};

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

impl RateLimitMode {
    /// Parses `real`, `off` or a positive factor.
    pub fn parse(value: &str) -> Result<Self, EmulatorError> {
        match value {
            "real" => Ok(RateLimitMode::Real),
            "off" => Ok(RateLimitMode::Off),
            other => match other.parse::<f64>() {
                Ok(f) if f > 0.0 && f.is_finite() => Ok(RateLimitMode::Scaled(f)),
                _ => Err(EmulatorError::Config(format!(
                    "--rate-limits must be `real`, `off` or a positive number, got `{other}`"
                ))),
            },
        }
    }
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
    /// API keys the emulator accepts: `KEY` with every scope, or `KEY:scope,scope` with only
    /// those (a request needing another is answered 403 `permission_denied`).
    pub api_keys: Vec<String>,
    /// How long a bulk import job stays `queued`, and then `processing`.
    pub job_delay: Duration,
    /// The rate limiter's clock; tests pass a `clock::FakeClock` (feature `test-support`) to step
    /// through windows.
    pub clock: Arc<dyn clock::Clock>,
    /// What it does where Klaviyo's spec is silent (see [`modes`]).
    pub modes: Modes,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            rate_limits: RateLimitMode::Real,
            faults: None,
            seed: 0,
            state_file: None,
            api_keys: vec!["pk_emulator".to_owned()],
            job_delay: Duration::from_millis(50),
            clock: Arc::new(clock::SystemClock),
            modes: Modes::default(),
        }
    }
}

/// Why the emulator could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// A configuration value is unusable.
    #[error("{0}")]
    Config(String),
    /// The fault spec does not parse.
    #[error("invalid --faults")]
    Faults(#[source] FaultSpecError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file could not be read or written.
    #[error("state file {path}")]
    StateFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not valid emulator state.
    #[error("state file {path} is not valid emulator state")]
    StateFormat {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// A running emulator.
#[derive(Debug)]
pub struct EmulatorHandle {
    /// e.g. `http://127.0.0.1:PORT`.
    pub base_url: String,
    app: Arc<App>,
    state_file: Option<PathBuf>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl EmulatorHandle {
    /// Stops serving and saves the state file, if any.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(());
        let _ = self.task.await;
        if let Err(err) = save_state(&self.app, self.state_file.as_deref()) {
            tracing::error!("{err}");
        }
    }

    /// The request counters.
    pub fn stats(&self) -> StatsSnapshot {
        lock(&self.app.stats).clone()
    }

    /// Changes the account directly, without HTTP, rate limits or stats, e.g.
    /// `handle.seed(|s| { s.create_list("Newsletter", None); })`.
    pub fn seed<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut lock(&self.app.state))
    }
}

fn load_state(config: &EmulatorConfig) -> Result<State, EmulatorError> {
    let mut state = read_state(config)?;
    state.modes = config.modes;
    Ok(state)
}

fn read_state(config: &EmulatorConfig) -> Result<State, EmulatorError> {
    let Some(path) = &config.state_file else {
        return Ok(State::new(config.seed));
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let mut state: State =
                serde_json::from_slice(&bytes).map_err(|source| EmulatorError::StateFormat {
                    path: path.clone(),
                    source,
                })?;
            state.after_load(config.seed);
            Ok(state)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::new(config.seed)),
        Err(source) => Err(EmulatorError::StateFile {
            path: path.clone(),
            source,
        }),
    }
}

fn save_state(app: &App, path: Option<&std::path::Path>) -> Result<(), EmulatorError> {
    let Some(path) = path else { return Ok(()) };
    let json = serde_json::to_vec_pretty(&*lock(&app.state)).map_err(|source| {
        EmulatorError::StateFormat {
            path: path.to_owned(),
            source,
        }
    })?;
    std::fs::write(path, json).map_err(|source| EmulatorError::StateFile {
        path: path.to_owned(),
        source,
    })
}

/// Binds and starts serving on the current tokio runtime.
pub async fn start(config: EmulatorConfig) -> Result<EmulatorHandle, EmulatorError> {
    let spec = match &config.faults {
        Some(s) => FaultSpec::parse(s).map_err(EmulatorError::Faults)?,
        None => FaultSpec::default(),
    };
    if config.api_keys.is_empty() {
        return Err(EmulatorError::Config(
            "at least one API key is required".into(),
        ));
    }
    let api_keys = config
        .api_keys
        .iter()
        .map(|text| server::KeyGrant::parse(text))
        .collect::<Result<Vec<_>, _>>()
        .map_err(EmulatorError::Config)?;
    let state = load_state(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| EmulatorError::Bind {
            addr: config.listen,
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|source| EmulatorError::Bind {
            addr: config.listen,
            source,
        })?;
    let app = Arc::new(App {
        state: Mutex::new(state),
        stats: Mutex::new(StatsSnapshot::default()),
        limiter: Mutex::new(ratelimit::Limiter::new(
            config.rate_limits,
            Arc::clone(&config.clock),
        )),
        faults: Mutex::new(faults::FaultInjector::new(spec, config.seed)),
        api_keys,
        seed: config.seed,
        job_delay: config.job_delay,
    });
    let router = axum::Router::new()
        .fallback(server::handle)
        .with_state((Arc::clone(&app), local));
    let (tx, rx) = oneshot::channel::<()>();
    let service = router.into_make_service_with_connect_info::<Conn>();
    let task = tokio::spawn(async move {
        let served = axum::serve(KillableListener::new(listener), service)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
        if let Err(err) = served {
            tracing::error!("emulator stopped: {err}");
        }
    });
    Ok(EmulatorHandle {
        base_url: format!("http://{local}"),
        app,
        state_file: config.state_file,
        shutdown: tx,
        task,
    })
}

/// Serves until Ctrl-C, printing the bound address, then saves the state file.
pub async fn serve(config: EmulatorConfig) -> Result<(), EmulatorError> {
    let handle = start(config).await?;
    println!("klsync emulator listening on {}", handle.base_url);
    let _ = tokio::signal::ctrl_c().await;
    handle.shutdown().await;
    Ok(())
}
