//! Progress bars and spinners on stderr for long reads, bulk jobs and applies.
//!
//! A thin wrapper over `indicatif` (which handles redraw throttling, terminal width, rate and
//! ETA estimation — the parts that are fiddly to get right by hand). It is on only when stderr
//! is a terminal and `-q` was not given ([`crate::Output::progress`]); a disabled [`Progress`]
//! hands out [`Task`]s that do nothing, so commands call it unconditionally:
//!
//! ```
//! # let output_progress_enabled = false;
//! use klsync::progress::Progress;
//!
//! let progress = Progress::new(output_progress_enabled); // in a command: output.progress()
//! let reading = progress.counter("Reading lists");
//! reading.inc(50); // after each page
//! reading.finish_and_clear();
//!
//! let applying = progress.bar(3, "Applying");
//! for change in ["list.a", "list.b", "segment.c"] {
//!     applying.set_message(change);
//!     // ... send it ...
//!     applying.inc(1);
//! }
//! applying.finish();
//! ```
//!
//! Plan and apply show a spinner while they read (the time spent, no count), `query run` a
//! counter of rows, and apply a bar over the plan's changes and one per bulk job (profiles
//! imported).
//!
//! Every stderr bar of the process belongs to one `MultiProgress`, so several bars stack
//! instead of fighting over the last line, and log events reach stderr through
//! [`StderrWriter`], which lifts the bars off the screen while it writes. Commands that
//! `eprintln!` while a bar is shown wrap it in [`Task::suspend`].

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};
#[cfg(any(test, feature = "test-support"))]
use std::sync::Arc;
use std::sync::LazyLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// The bars drawn on stderr, all of them: see the module docs.
static STDERR_BARS: LazyLock<MultiProgress> =
    LazyLock::new(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));

/// Writes to stderr with any progress bars lifted off the screen, so a line never tears a bar
/// (used by `logging` for events on stderr).
#[derive(Debug, Default, Clone, Copy)]
pub struct StderrWriter;

impl Write for StderrWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Write the whole event inside one suspension: a partial write would redraw mid-line.
        STDERR_BARS.suspend(|| io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Bars: label, bar, done/total, rate, time left, then the current item.
const BAR_TEMPLATE: &str =
    "{prefix:>12} [{bar:30}] {human_pos}/{human_len} ({rate}, {eta} left) {wide_msg}";
/// Spinners (unknown total): label, count so far, rate, elapsed.
const COUNTER_TEMPLATE: &str = "{spinner} {prefix:>10} {human_pos} ({rate}, {elapsed}) {wide_msg}";
/// A spinner counts nothing: a count that stays at 0 while work happens would look stuck.
const SPINNER_TEMPLATE: &str = "{spinner} {prefix} ({elapsed}) {wide_msg}";

#[cfg(any(test, feature = "test-support"))]
type TargetFactory = Arc<dyn Fn() -> ProgressDrawTarget + Send + Sync>;

/// Where an enabled [`Progress`] draws.
#[derive(Clone)]
enum Target {
    /// The process-wide stderr bars.
    Stderr,
    /// A target of its own per bar (tests).
    #[cfg(any(test, feature = "test-support"))]
    Custom(TargetFactory),
}

/// Makes progress bars, or nothing when disabled.
#[derive(Clone)]
pub struct Progress {
    target: Option<Target>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

impl Progress {
    /// Bars drawn on stderr when `enabled`; nothing at all otherwise.
    pub fn new(enabled: bool) -> Self {
        Progress {
            target: enabled.then_some(Target::Stderr),
        }
    }

    /// On when stderr is a terminal and not `quiet`.
    pub fn for_stderr(quiet: bool) -> Self {
        Progress::new(!quiet && std::io::stderr().is_terminal())
    }

    /// Bars drawn where `target` says (tests draw into memory).
    #[cfg(any(test, feature = "test-support"))]
    pub fn with_target(
        enabled: bool,
        target: impl Fn() -> ProgressDrawTarget + Send + Sync + 'static,
    ) -> Self {
        Progress {
            target: enabled.then(|| Target::Custom(Arc::new(target))),
        }
    }

    /// Whether bars are drawn.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// A bar for `total` steps, labelled `label` (e.g. "Applying").
    pub fn bar(&self, total: u64, label: &str) -> Task {
        if total == 0 {
            // A full bar over nothing says nothing.
            return Task { bar: None };
        }
        self.task(Some(total), label, BAR_TEMPLATE)
    }

    /// A spinner for work of unknown size, labelled `label` (e.g. "Reading Klaviyo"); it shows
    /// the time spent, not a count.
    pub fn spinner(&self, label: &str) -> Task {
        self.spinning(label, SPINNER_TEMPLATE)
    }

    /// A spinner that counts what it has done (rows read, pages), for work of unknown size.
    pub fn counter(&self, label: &str) -> Task {
        self.spinning(label, COUNTER_TEMPLATE)
    }

    fn spinning(&self, label: &str, template: &str) -> Task {
        let task = self.task(None, label, template);
        if let Some(bar) = &task.bar {
            // Keeps spinning while waiting on a slow page or a rate limit.
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        task
    }

    fn task(&self, total: Option<u64>, label: &str, template: &str) -> Task {
        let Some(target) = &self.target else {
            return Task { bar: None };
        };
        let bar = match target {
            Target::Stderr => STDERR_BARS.add(ProgressBar::with_draw_target(
                total,
                ProgressDrawTarget::hidden(),
            )),
            #[cfg(any(test, feature = "test-support"))]
            Target::Custom(target) => ProgressBar::with_draw_target(total, target()),
        };
        let style = ProgressStyle::with_template(template)
            .expect("the templates are valid")
            // indicatif's own {per_sec} prints four decimals; whole steps per second read better.
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}/s", state.per_sec());
                },
            )
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_string());
        Task { bar: Some(bar) }
    }
}

/// One bar or spinner; does nothing when made by a disabled [`Progress`]. Cheap to clone
/// (clones drive the same bar, e.g. from concurrent tasks).
#[derive(Debug, Clone)]
pub struct Task {
    bar: Option<ProgressBar>,
}

impl Task {
    /// Advance by `n` steps.
    pub fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Change the total (e.g. when a bulk job reports its size).
    pub fn set_length(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// Show what is being worked on.
    pub fn set_message(&self, message: impl Into<Cow<'static, str>>) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    /// Leave the bar on screen, complete.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }

    /// Remove the bar from the screen.
    pub fn finish_and_clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Leave the bar where it stopped (on failure).
    pub fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }

    /// Run `f` (which prints) with the bar hidden, so the output does not tear it.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::TermLike;
    use std::sync::Mutex;

    /// A terminal that records what is written to it.
    #[derive(Debug, Clone, Default)]
    struct Recorded(Arc<Mutex<String>>);

    impl Recorded {
        fn text(&self) -> String {
            self.0.lock().unwrap().clone()
        }
        fn push(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push_str(s);
            Ok(())
        }
    }

    impl TermLike for Recorded {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.push(s)?;
            self.push("\n")
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.push(s)
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn progress(enabled: bool, term: &Recorded) -> Progress {
        let term = term.clone();
        Progress::with_target(enabled, move || {
            ProgressDrawTarget::term_like(Box::new(term.clone()))
        })
    }

    fn drive(progress: &Progress) {
        let bar = progress.bar(4, "Applying");
        bar.set_message("list.newsletter");
        bar.inc(3);
        bar.set_length(5);
        bar.inc(2);
        bar.finish();
        let spinner = progress.counter("Reading");
        spinner.inc(7);
        progress.bar(0, "Nothing").finish();
        progress.spinner("Waiting").finish_and_clear();
        let value = spinner.suspend(|| 42);
        assert_eq!(value, 42);
        spinner.abandon();
    }

    #[test]
    fn a_disabled_progress_writes_nothing() {
        let term = Recorded::default();
        let progress = progress(false, &term);
        assert!(!progress.is_enabled());
        drive(&progress);
        assert_eq!(term.text(), "");
        assert!(!Progress::new(false).is_enabled());
    }

    #[test]
    fn an_enabled_bar_shows_label_counts_and_message() {
        let term = Recorded::default();
        let progress = progress(true, &term);
        drive(&progress);
        let text = term.text();
        assert!(text.contains("Applying"), "{text}");
        assert!(text.contains("5/5"), "{text}");
        assert!(text.contains("/s, "), "rate shown: {text}");
        assert!(text.contains("list.newsletter"), "{text}");
        assert!(text.contains("Reading"), "{text}");
        assert!(!text.contains("Nothing"), "no bar over zero steps: {text}");
        assert!(
            !text.contains("Waiting 0"),
            "a spinner shows no count: {text}"
        );
    }
}
