//! Where log events go: stderr for people, optionally a rotating file for later.
//!
//! Levels: `-q` shows errors, nothing shows warnings, `-v`/`-vv`/`-vvv` info/debug/trace for
//! klsync's own events (dependencies stay at `warn` so `-vvv` is about klsync, not hyper).
//! `RUST_LOG` overrides all of that, for stderr and the file alike. The file records at least
//! `info` even under `-q`: it is the record kept for after the terminal is gone.
//!
//! `--log-format` applies to the file when there is one (stderr then stays human-readable),
//! else to stderr, so a CI job that only captures stderr can still ask for JSON.
//!
//! Rotation is by size, with a small writer of our own ([`RotatingFile`]) rather than
//! `tracing-appender`: its rotation is by time only, and a CI runner doing one apply a day
//! would keep one file per run of unbounded size, while a long `apply` at trace level can write
//! hundreds of megabytes in one day. Size-based rotation bounds the disk used whatever the
//! schedule: `max_bytes * (keep + 1)`.
//!
//! Secrets are kept out by construction: API keys and database URLs live in
//! [`crate::settings::Secret`], whose `Debug`/`Display` are redacted, and the HTTP client marks
//! the `Authorization` header sensitive.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry};

use crate::cli::LogFormat;
use crate::error::Error;
use crate::progress::StderrWriter;

/// A log file is rotated once it would grow past this size.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// How many rotated files (`PATH.1` newest ... `PATH.N` oldest) are kept.
pub const DEFAULT_KEEP: usize = 5;

/// How much detail the user asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verbosity {
    /// `-q`: errors only on stderr.
    pub quiet: bool,
    /// Number of `-v`.
    pub verbose: u8,
}

impl Verbosity {
    /// The level of klsync's own events on stderr.
    fn stderr_level(self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            (false, 1) => "info",
            (false, 2) => "debug",
            (false, _) => "trace",
        }
    }

    /// The level of klsync's own events in the log file: never below `info`.
    fn file_level(self) -> &'static str {
        match self.verbose {
            0 | 1 => "info",
            2 => "debug",
            _ => "trace",
        }
    }
}

/// What [`init`] sets up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// Line format (of the file when there is one, else of stderr).
    pub format: LogFormat,
    /// A log file to write besides stderr, rotated by size.
    pub file: Option<PathBuf>,
    /// `-q` / `-v`.
    pub verbosity: Verbosity,
    /// Rotate the file once it would exceed this many bytes.
    pub max_bytes: u64,
    /// Rotated files to keep.
    pub keep: usize,
}

impl LogOptions {
    /// Options with the default rotation ([`DEFAULT_MAX_BYTES`], [`DEFAULT_KEEP`]).
    pub fn new(format: LogFormat, file: Option<PathBuf>, verbosity: Verbosity) -> Self {
        LogOptions {
            format,
            file,
            verbosity,
            max_bytes: DEFAULT_MAX_BYTES,
            keep: DEFAULT_KEEP,
        }
    }
}

/// Keeps the log file open; flushes it when dropped. Hold it until the process ends.
#[must_use = "the log file is flushed when the guard drops: hold it until the process exits"]
#[derive(Debug)]
pub struct LogGuard {
    file: Option<SharedFile>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            let _ = file.lock().flush();
        }
    }
}

/// Install the global subscriber. Fails only when the log file cannot be opened; a second call
/// in the same process (tests) keeps the first subscriber.
pub fn init(options: &LogOptions) -> Result<LogGuard, Error> {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = |default_level: &str| match &env {
        Some(directives) => EnvFilter::new(directives),
        // sqlx's `slow statement` warnings (over 1 s) print the statement's text and fire on
        // every large query and on a busy state database: timing is klsync's to report (the
        // statement timeout, the plan's figures), so they are shown only through RUST_LOG.
        None => EnvFilter::new(format!("warn,sqlx::query=error,klsync={default_level}")),
    };
    let stderr_filter = filter(options.verbosity.stderr_level());
    let mut layers: Vec<BoxedLayer> = Vec::with_capacity(2);
    let guard = match &options.file {
        None => {
            layers.push(layer(options.format, StderrWriter::default, stderr_filter));
            LogGuard { file: None }
        }
        Some(path) => {
            let file =
                RotatingFile::open(path, options.max_bytes, options.keep).map_err(|source| {
                    Error::Io {
                        path: path.clone(),
                        source,
                    }
                })?;
            let shared = SharedFile(Arc::new(Mutex::new(file)));
            layers.push(layer(LogFormat::Text, StderrWriter::default, stderr_filter));
            let file_filter = filter(options.verbosity.file_level());
            layers.push(layer(options.format, shared.clone(), file_filter));
            LogGuard { file: Some(shared) }
        }
    };
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(guard)
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Targets of dependency events that carry a connection parameter's value, which may be a
/// password: sqlx warns `ignoring unrecognized connect parameter key=sslpassword value=...`.
/// They are dropped whatever `RUST_LOG` says.
const SECRET_BEARING_TARGETS: &[&str] = &["sqlx_postgres::options::parse"];

fn keeps_secrets_out(metadata: &tracing::Metadata<'_>) -> bool {
    !SECRET_BEARING_TARGETS.contains(&metadata.target())
}

fn layer<W>(format: LogFormat, writer: W, filter: EnvFilter) -> BoxedLayer
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let safe = tracing_subscriber::filter::filter_fn(keeps_secrets_out);
    match format {
        LogFormat::Text => fmt
            .with_ansi(false)
            .with_filter(filter)
            .with_filter(safe)
            .boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .with_filter(safe)
            .boxed(),
    }
}

/// A [`RotatingFile`] shared between the subscriber and the [`LogGuard`].
#[derive(Debug, Clone)]
struct SharedFile(Arc<Mutex<RotatingFile>>);

impl SharedFile {
    fn lock(&self) -> MutexGuard<'_, RotatingFile> {
        // A panic while logging leaves the file usable: keep logging rather than lose the rest.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<'a> MakeWriter<'a> for SharedFile {
    type Writer = LockedFile<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LockedFile(self.lock())
    }
}

/// The log file, locked for one event.
struct LockedFile<'a>(MutexGuard<'a, RotatingFile>);

impl Write for LockedFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// An append-only file that moves itself aside once it would grow past a size: `PATH` becomes
/// `PATH.1`, `PATH.1` becomes `PATH.2`, ..., and `PATH.<keep>` is deleted.
///
/// Every `write` is one whole log event (the fmt layer formats an event, then writes it at
/// once), so rotating before a write never splits a line between two files. An event larger
/// than `max_bytes` is written whole into a fresh file.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    len: u64,
}

impl RotatingFile {
    /// Open (appending) or create `path` and its parent directories.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            file,
            len,
        })
    }

    /// `PATH.n`.
    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            // Nothing kept: start the same file over.
            self.file = File::create(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.len = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.len > 0 && self.len + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn rotates_before_a_write_that_would_exceed_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/klsync.log");
        let mut file = RotatingFile::open(&path, 20, 2).unwrap();
        file.write_all(b"line one 0123456\n").unwrap(); // 17 bytes
        assert_eq!(read(&path), "line one 0123456\n");
        file.write_all(b"line two\n").unwrap(); // 17 + 9 > 20: rotate first
        assert_eq!(read(&path), "line two\n");
        assert_eq!(read(&file.rotated(1)), "line one 0123456\n");
        file.write_all(b"three\n").unwrap(); // 9 + 6 fits
        assert_eq!(read(&path), "line two\nthree\n");
        file.write_all(b"line four 0123\n").unwrap();
        file.write_all(b"line five 0123\n").unwrap();
        // Only two rotated files are kept: "line one" fell off the end.
        assert_eq!(read(&path), "line five 0123\n");
        assert_eq!(read(&file.rotated(1)), "line four 0123\n");
        assert_eq!(read(&file.rotated(2)), "line two\nthree\n");
        assert!(!file.rotated(3).exists());
    }

    #[test]
    fn an_oversized_event_is_written_whole_into_a_fresh_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.log");
        let mut file = RotatingFile::open(&path, 8, 1).unwrap();
        file.write_all(b"abc\n").unwrap();
        file.write_all(b"a very long line\n").unwrap();
        assert_eq!(read(&path), "a very long line\n");
        assert_eq!(read(&file.rotated(1)), "abc\n");
    }

    #[test]
    fn reopening_counts_the_existing_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.log");
        std::fs::write(&path, "0123456789\n").unwrap();
        let mut file = RotatingFile::open(&path, 12, 3).unwrap();
        file.write_all(b"next\n").unwrap();
        assert_eq!(read(&path), "next\n");
        assert_eq!(read(&file.rotated(1)), "0123456789\n");
    }

    #[test]
    fn keep_zero_truncates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.log");
        let mut file = RotatingFile::open(&path, 6, 0).unwrap();
        file.write_all(b"12345\n").unwrap();
        file.write_all(b"abc\n").unwrap();
        assert_eq!(read(&path), "abc\n");
        assert!(!file.rotated(1).exists());
    }

    #[test]
    fn file_level_never_drops_below_info_and_quiet_only_affects_stderr() {
        let quiet = Verbosity {
            quiet: true,
            verbose: 0,
        };
        assert_eq!(quiet.stderr_level(), "error");
        assert_eq!(quiet.file_level(), "info");
        let loud = Verbosity {
            quiet: false,
            verbose: 3,
        };
        assert_eq!(loud.stderr_level(), "trace");
        assert_eq!(loud.file_level(), "trace");
        assert_eq!(Verbosity::default().stderr_level(), "warn");
    }
}
