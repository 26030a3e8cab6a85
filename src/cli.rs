//! The command line, as clap sees it: raw values only, no I/O. `run` turns these into work.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Klaviyo configuration as code: keep lists, segments, tags and SQL-driven profile data in YAML,
/// see exactly what would change, and make Klaviyo match.
#[derive(Debug, Parser)]
#[command(
    name = "klsync",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted by every subcommand.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// When to colour output. `auto` colours a terminal unless NO_COLOR is set.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// Print only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides it. `demo -v`
    /// also shows every change, field and sampled row, as `plan` and `apply` do.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log line format: of the --log-file when given, else of stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Also write logs (at least info level) to this file; it rotates at 10 MiB, keeping 5 old files.
    #[arg(long, global = true, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Write the run's metrics (requests per endpoint, retries, 429s, waits, rows, duration) as JSON.
    #[arg(long, global = true, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Write every exchange with Klaviyo (plan, apply, import, drift) as JSON lines, the API
    /// key redacted: attach it to a report when Klaviyo behaves unexpectedly.
    #[arg(long, global = true, value_name = "FILE")]
    pub record_http: Option<PathBuf>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// When to use colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// The project a command works on.
#[derive(Debug, Args, Clone)]
pub struct ProjectArgs {
    /// Project directory: holds klsync.yaml and the *.yaml / *.yml manifests in and below it.
    #[arg(short = 'C', long = "dir", value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a project: klsync.yaml, a starter manifest, the editor schemas, `.klsync/` ignored.
    Init(InitArgs),
    /// Check klsync.yaml and every manifest; report all problems with file:line:column.
    Validate(ValidateArgs),
    /// Print the JSON Schema of manifest files (for editors and CI).
    Schema(SchemaArgs),
    /// Run the local Klaviyo emulator (for tests, demos and trying klsync without an account).
    #[cfg(feature = "emulator")]
    Emulator(klsync_emulator::cli::EmulatorArgs),
    /// Save, list, show and run the SQL queries kept in the database's saved_queries table.
    Query(QueryArgs),
    /// Show what `apply` would change in Klaviyo, and what it costs in API requests and time.
    Plan(PlanArgs),
    /// Make Klaviyo match the manifests (or apply exactly a saved plan).
    Apply(ApplyArgs),
    /// Try klsync end to end against an in-process emulator: no account, no setup.
    #[cfg(feature = "emulator")]
    Demo(DemoArgs),
    /// Write manifests for what exists in Klaviyo and record it as managed.
    Import(ImportArgs),
    /// Show what was changed in Klaviyo since klsync last applied (read-only).
    Drift(DriftArgs),
    /// Show recorded runs and the changes each applied, newest first.
    History(HistoryArgs),
    /// Repair klsync's own state: release an apply lock left behind (`state unlock RUN_ID`).
    State(StateArgs),
    /// Print a shell completion script (e.g. `klsync completions bash > /etc/bash_completion.d/klsync`).
    Completions(CompletionsArgs),
    /// Print the man page, or write one page per subcommand into a directory.
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory for the new project (created if missing).
    #[arg(value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Directory to write klsync.yaml (if absent), tags.yaml, lists.yaml and segments.yaml to.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Import only these kinds (`tags` covers tag groups and tags).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KINDS")]
    pub only: Vec<ImportKindArg>,
    /// Overwrite manifest files that already exist.
    #[arg(long)]
    pub force: bool,
    /// Wait this long for the apply lock when another apply holds it (`30s`, `10m`; 0 fails at once).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = crate::duration::parse_duration)]
    pub lock_timeout: Duration,
}

/// What `import --only` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportKindArg {
    Tags,
    Lists,
    Segments,
}

#[derive(Debug, Args)]
pub struct DriftArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// How to print what drifted.
    #[arg(long, value_enum, default_value_t = DriftFormat::Text)]
    pub format: DriftFormat,
    /// Also list resources in Klaviyo that klsync does not manage (they count as drift).
    #[arg(long)]
    pub include_unmanaged: bool,
    /// Also read back every profile property and list member the data syncs recorded and
    /// report those changed in Klaviyo (one request per 100; the count is printed first).
    #[arg(long)]
    pub data: bool,
    /// Also read every list with `members:` whole and report members klsync removed that are
    /// on it again, members it added that are gone, and removals it could not make (one request
    /// per 100 members of each list; the count is printed first).
    #[arg(long)]
    pub members: bool,
}

/// How `drift` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriftFormat {
    /// For terminals.
    Text,
    /// For machines (documented in docs/import-drift.md).
    Json,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Show at most this many runs.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = HistoryFormat::Text)]
    pub format: HistoryFormat,
}

/// How `history` prints runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HistoryFormat {
    /// A few lines per run, one per change.
    Text,
    /// A JSON array of runs with their changes.
    Json,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write klsync.1 and one klsync-<subcommand>.1 per subcommand here instead of printing
    /// klsync.1.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Also save the plan as JSON to FILE, for `klsync apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// How to print the plan.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Exit 0 when there is nothing to change, 2 when there are changes (1 on errors).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Also read Klaviyo for data changed outside klsync: `--refresh` reads the sampled
    /// profiles of `profiles:` syncs (one request per sync); `--refresh=full` reads back every
    /// profile and list member the data syncs recorded (one request per 100) and plans the
    /// changes that restore them. The cost is printed first.
    #[arg(
        long,
        value_enum,
        value_name = "WHAT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "sample"
    )]
    pub refresh: Option<Refresh>,
    /// How much of the plan the text shows (set by `demo`; `plan` always shows everything).
    #[arg(skip = crate::render::Detail::FULL)]
    pub detail: crate::render::Detail,
    /// Plan only this resource or data sync and what it needs (repeatable): tag_group.NAME,
    /// tag.KEY, list.KEY (with its tag links and members), list.KEY.members, segment.KEY,
    /// profiles.ID. For exceptions, as Terraform's -target: plan without it before long.
    #[arg(long, value_name = "ADDRESS")]
    pub target: Vec<String>,
    /// Send every row of this data sync again, whatever klsync recorded (repeatable): after an
    /// account was restored or wiped. A profiles sync id, or list.KEY.members.
    #[arg(long, value_name = "SYNC_ID")]
    pub resync: Vec<String>,
}

/// What `plan --refresh` reads back from Klaviyo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Refresh {
    /// The profiles in each `profiles:` sync's diff sample: a report, one request per sync.
    Sample,
    /// Every profile and list member the data syncs recorded: planned to be restored.
    Full,
}

/// How `plan` prints the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// For terminals.
    Text,
    /// For pull-request comments.
    Markdown,
    /// The saved-plan format.
    Json,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// A plan saved with `klsync plan --out`: apply exactly it, or refuse.
    #[arg(value_name = "PLAN_FILE")]
    pub plan_file: Option<PathBuf>,
    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(long)]
    pub auto_approve: bool,
    /// Allow the plan to delete resources in Klaviyo.
    #[arg(long)]
    pub allow_destroy: bool,
    /// Refuse a saved plan older than this (`30m`, `2h`, `1d`); default klsync.yaml plan.max_age_hours.
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
    /// Apply even when lists would lose more members than their `max_removals` allows.
    #[arg(long)]
    pub force: bool,
    /// Wait this long for the apply lock when another apply holds it (`30s`, `10m`; 0 fails at once).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = crate::duration::parse_duration)]
    pub lock_timeout: Duration,
    /// How much of its progress apply prints (set by `demo`: in brief, only failed changes one
    /// by one; `apply` always prints every change).
    #[arg(skip = crate::render::Detail::FULL)]
    pub detail: crate::render::Detail,
    /// Apply only this resource or data sync and what it needs (repeatable; as `plan
    /// --target`). A saved plan keeps the targets it was made with.
    #[arg(long, value_name = "ADDRESS", conflicts_with = "plan_file")]
    pub target: Vec<String>,
    /// Send every row of this data sync again (repeatable; as `plan --resync`). A saved plan
    /// keeps the resyncs it was made with.
    #[arg(long, value_name = "SYNC_ID", conflicts_with = "plan_file")]
    pub resync: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(subcommand)]
    pub command: StateCommand,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Release the apply lock of a run that will not release it (Terraform's force-unlock).
    Unlock(UnlockArgs),
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// The run holding the lock, as "another apply is running: run RUN_ID ..." names it (or the
    /// first group of it, as `klsync history` shows it).
    #[arg(value_name = "RUN_ID")]
    pub run_id: String,
    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(short = 'y', long)]
    pub force: bool,
}

#[derive(Debug, Args, Default)]
pub struct DemoArgs {
    /// Copy the demo project into DIR (new or empty) and keep it, with its state, its sample
    /// database and the emulator's account, instead of a temporary directory removed at exit.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// Output format for the problems found.
    #[arg(long, value_enum, default_value_t = DiagnosticFormat::Text)]
    pub format: DiagnosticFormat,
}

/// How validation problems are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiagnosticFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Which schema to print.
    #[arg(value_enum, default_value_t = SchemaKind::Manifest)]
    pub kind: SchemaKind,
}

/// The JSON Schemas klsync publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    /// A manifest file (`*.yaml` with lists, segments, tags, ...).
    Manifest,
    /// The project settings file `klsync.yaml`.
    Settings,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Project directory: its klsync.yaml (when there is one) names the database variable and
    /// the statement timeout, as for every other command.
    #[arg(
        short = 'C',
        long = "dir",
        global = true,
        value_name = "DIR",
        default_value = "."
    )]
    pub dir: PathBuf,
    /// Environment variable holding the database URL (postgres://..., mysql://... or
    /// sqlite:...). Default: klsync.yaml's `database.url_env`, else DATABASE_URL.
    #[arg(long, global = true, value_name = "NAME")]
    pub database_url_env: Option<String>,
    /// Cancel a query running longer than this (`90s`, `1500ms`, `2m`; `0` for no limit).
    /// Default: klsync.yaml's `database.statement_timeout_seconds`, else 60s.
    #[arg(long, global = true, value_name = "DURATION")]
    pub statement_timeout: Option<String>,
    #[command(subcommand)]
    pub command: QueryCommand,
}

#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Save a query under a name; saving an existing name updates it.
    Save(QuerySaveArgs),
    /// List the saved queries.
    List,
    /// Print a saved query: SQL, description, parameters and timestamps.
    Show(QueryShowArgs),
    /// Run a saved query (read-only) and print its rows.
    Run(QueryRunArgs),
    /// Delete a saved query. A manifest that still names it fails to plan, naming it.
    Delete(QueryShowArgs),
}

#[derive(Debug, Args)]
pub struct QuerySaveArgs {
    /// The query's name (at most 100 characters).
    pub name: String,
    /// The SQL text; parameters as `$1`, `$2`, ...
    #[arg(long)]
    pub sql: String,
    /// What the query selects, for humans. Kept from the previous save when omitted.
    #[arg(long)]
    pub description: Option<String>,
    /// Default parameter values, a JSON array bound to `$1`, `$2`, ... (e.g. '["2024-01-01", 5]').
    #[arg(long, value_name = "JSON")]
    pub params: Option<String>,
}

#[derive(Debug, Args)]
pub struct QueryShowArgs {
    /// The saved query's name.
    pub name: String,
}

#[derive(Debug, Args)]
pub struct QueryRunArgs {
    /// The saved query's name.
    pub name: String,
    /// Parameter values for this run, a JSON array replacing the saved ones.
    #[arg(long, value_name = "JSON")]
    pub params: Option<String>,
    /// Print at most this many rows (the query stops after them).
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// How to print the rows.
    #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
    pub format: QueryFormat,
}

/// How `query run` prints rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryFormat {
    /// Aligned columns, long cells truncated.
    Table,
    /// A JSON array of objects.
    Json,
    /// RFC 4180 CSV with a header line.
    Csv,
}
