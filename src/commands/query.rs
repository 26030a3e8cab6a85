//! `klsync query`: save, list, show and run the saved queries in the database named by
//! `$DATABASE_URL` (or `--database-url-env`).
//!
//! Rows go to stdout as they stream in; confirmations and row counts go to stderr, so
//! `klsync query run x --format csv > x.csv` captures only the data.

use std::io::{self, IsTerminal, Write};

use futures::StreamExt;
use serde_json::{Value, json};

use super::stdout_error;
use crate::cli::{QueryArgs, QueryCommand, QueryFormat, QueryRunArgs, QuerySaveArgs};
use crate::error::{Error, ExitStatus};
use crate::progress::Progress;
use crate::run::Output;
use crate::settings::Secret;
use crate::sql::output::{RowFormat, RowWriter};
use crate::sql::{QueryManager, QueryOptions, Row, SavedQuery, SqlError};

/// Run `klsync query ...`.
pub fn run(args: QueryArgs, output: &Output) -> Result<ExitStatus, Error> {
    if !args.dir.is_dir() {
        return Err(Error::Config(format!(
            "-C {}: no such directory",
            args.dir.display()
        )));
    }
    // klsync.yaml when the directory has one; the defaults otherwise, so `query` also works
    // outside a project (a data team's SQL repository).
    let settings = super::import::settings(&args.dir)?.database;
    let statement_timeout = match &args.statement_timeout {
        Some(text) => crate::duration::parse_duration(text)
            .map_err(|reason| Error::Config(format!("--statement-timeout {text:?}: {reason}")))?,
        None => std::time::Duration::from_secs(settings.statement_timeout_seconds),
    };
    let url_env = args
        .database_url_env
        .as_deref()
        .unwrap_or(&settings.url_env);
    let url = std::env::var(url_env).map_err(|_| {
        Error::Config(format!(
            "environment variable {url_env} is not set (or not UTF-8); it must hold the database URL, \
             postgres://..., mysql://... or sqlite:..."
        ))
    })?;
    let url = Secret::new(url);
    let options = QueryOptions {
        statement_timeout,
        copy: settings.copy == crate::manifest::settings::CopyMode::Auto,
        ..QueryOptions::default()
    };
    super::session::runtime()?.block_on(async move {
        let manager = QueryManager::connect(&url, options).await?;
        let result = match args.command {
            QueryCommand::Save(save) => save_query(&manager, save, output).await,
            QueryCommand::List => list_queries(&manager, output).await,
            QueryCommand::Show(show) => show_query(&manager, &show.name).await,
            QueryCommand::Run(run) => run_query(&manager, run, output).await,
            QueryCommand::Delete(delete) => delete_query(&manager, &delete.name, output).await,
        };
        manager.close().await;
        result
    })
}

async fn save_query(
    manager: &QueryManager,
    args: QuerySaveArgs,
    output: &Output,
) -> Result<ExitStatus, Error> {
    let params = match &args.params {
        Some(text) => parse_params(text)?,
        None => Vec::new(),
    };
    // The checks a manifest's query gets, and the database's own, before anything is stored:
    // a query that cannot run fails here, naming itself, not later in a sync.
    manager
        .check_query(&args.sql, &params)
        .await
        .map_err(|err| named(&args.name, "not saved", err))?;
    let saved = manager
        .save_query(&args.name, &args.sql, args.description.as_deref(), &params)
        .await?;
    if !output.quiet {
        let verb = if saved.created_at == saved.updated_at {
            "saved"
        } else {
            "updated"
        };
        eprintln!("{verb} query `{}`", saved.name);
    }
    Ok(ExitStatus::Success)
}

async fn list_queries(manager: &QueryManager, output: &Output) -> Result<ExitStatus, Error> {
    let queries = manager.list_queries().await?;
    if queries.is_empty() {
        if !output.quiet {
            eprintln!("no saved queries in {}", manager.redacted_url());
        }
        return Ok(ExitStatus::Success);
    }
    let mut writer = RowWriter::new(RowFormat::Table, io::stdout().lock());
    for query in &queries {
        writer
            .write_row(&listing_row(query))
            .map_err(stdout_error)?;
    }
    let _stdout = writer.finish().map_err(stdout_error)?;
    Ok(ExitStatus::Success)
}

fn listing_row(query: &SavedQuery) -> Row {
    let mut row = Row::new();
    row.insert("name".into(), json!(query.name));
    // As `query show` prints it: the table writer would print a missing one as SQL's NULL.
    row.insert(
        "description".into(),
        json!(query.description.as_deref().unwrap_or("-")),
    );
    row.insert("params".into(), json!(query.params.len()));
    row.insert("updated_at".into(), json!(timestamp(query.updated_at)));
    row
}

async fn show_query(manager: &QueryManager, name: &str) -> Result<ExitStatus, Error> {
    let query = load(manager, name).await?;
    let mut out = io::stdout().lock();
    out.write_all(describe(&query).as_bytes())
        .map_err(stdout_error)?;
    Ok(ExitStatus::Success)
}

fn describe(query: &SavedQuery) -> String {
    let params = Value::Array(query.params.clone());
    let mut text = format!(
        "name:        {}\ndescription: {}\nparams:      {}\ncreated_at:  {}\nupdated_at:  {}\nsql:\n",
        query.name,
        query.description.as_deref().unwrap_or("-"),
        params,
        timestamp(query.created_at).unwrap_or_else(|| "-".into()),
        timestamp(query.updated_at).unwrap_or_else(|| "-".into()),
    );
    for line in query.sql.lines() {
        text.push_str("    ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

fn timestamp(value: Option<chrono::NaiveDateTime>) -> Option<String> {
    value.map(|at| at.format("%Y-%m-%dT%H:%M:%S%.f").to_string())
}

async fn run_query(
    manager: &QueryManager,
    args: QueryRunArgs,
    output: &Output,
) -> Result<ExitStatus, Error> {
    let query = load(manager, &args.name).await?;
    let params = match &args.params {
        Some(text) => parse_params(text)?,
        None => query.params.clone(),
    };
    let limit = args
        .limit
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let format = match args.format {
        QueryFormat::Table => RowFormat::Table,
        QueryFormat::Json => RowFormat::Json,
        QueryFormat::Csv => RowFormat::Csv,
    };
    let rows = manager.execute_query(&query.sql, &params).take(limit);
    let mut rows = std::pin::pin!(rows);
    let mut writer = RowWriter::new(format, io::BufWriter::new(io::stdout().lock()));
    // A spinner only when the rows go elsewhere (`> file.csv`): on a shared terminal it would
    // tear the rows it counts.
    let progress = if io::stdout().is_terminal() {
        Progress::new(false)
    } else {
        output.progress()
    };
    let spinner = progress.counter("Reading rows");
    // Counted as read once fetched, whether or not stdout takes it.
    let mut read = 0u64;
    let result = loop {
        let Some(row) = rows.next().await else {
            break Ok(());
        };
        match row {
            Ok(row) => {
                read += 1;
                spinner.inc(1);
                if let Err(err) = writer.write_row(&row) {
                    break Err(err);
                }
            }
            Err(err) => {
                spinner.abandon();
                output.metrics.add_rows_read(read);
                return Err(named(&args.name, "failed", err));
            }
        }
    };
    spinner.finish_and_clear();
    output.metrics.add_rows_read(read);
    match result {
        Ok(()) => {}
        // The reader went away (`| head`): stop the query, as a finished pipeline should.
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitStatus::Success),
        Err(err) => return Err(stdout_error(err)),
    }
    let count = writer.rows();
    match writer.finish() {
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitStatus::Success),
        Err(err) => return Err(stdout_error(err)),
    }
    if !output.quiet && format == RowFormat::Table {
        eprintln!("({count} row{})", if count == 1 { "" } else { "s" });
    }
    Ok(ExitStatus::Success)
}

async fn delete_query(
    manager: &QueryManager,
    name: &str,
    output: &Output,
) -> Result<ExitStatus, Error> {
    if !manager.delete_query(name).await? {
        return Err(not_saved(manager, name));
    }
    if !output.quiet {
        eprintln!("deleted saved query `{name}`");
    }
    Ok(ExitStatus::Success)
}

async fn load(manager: &QueryManager, name: &str) -> Result<SavedQuery, Error> {
    manager
        .load_query(name)
        .await?
        .ok_or_else(|| not_saved(manager, name))
}

/// A saved query's failure, naming it (and where it lives) once, with the SQL layer's reason.
/// Connection failures keep their own error: they are not about the query.
fn named(name: &str, outcome: &str, err: SqlError) -> Error {
    match err {
        SqlError::Connect { .. }
        | SqlError::InvalidUrl { .. }
        | SqlError::UnsupportedUrl { .. } => err.into(),
        err => Error::Config(format!("query `{name}` (saved_queries) {outcome}: {err}")),
    }
}

fn not_saved(manager: &QueryManager, name: &str) -> Error {
    Error::Config(format!(
        "no saved query named `{name}` in {} (see `klsync query list`)",
        manager.redacted_url()
    ))
}

fn parse_params(text: &str) -> Result<Vec<Value>, Error> {
    serde_json::from_str(text).map_err(|err| {
        Error::Config(format!(
            "--params must be a JSON array of values for $1, $2, ... (e.g. '[\"2024-01-01\", 5]'): {err}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_must_be_a_json_array() {
        assert_eq!(
            parse_params(r#"["a", 1, null]"#).unwrap(),
            vec![json!("a"), json!(1), Value::Null]
        );
        assert!(parse_params(r#"{"a": 1}"#).is_err());
        assert!(parse_params("not json").is_err());
    }

    #[test]
    fn show_prints_every_field_and_indents_the_sql() {
        let at = chrono::NaiveDate::from_ymd_opt(2024, 5, 1).and_then(|d| d.and_hms_opt(12, 30, 0));
        let query = SavedQuery {
            name: "vip".into(),
            description: Some("Big spenders".into()),
            sql: "SELECT email\nFROM customers WHERE spend > $1".into(),
            params: vec![json!(1000)],
            created_at: at,
            updated_at: at,
        };
        assert_eq!(
            describe(&query),
            "name:        vip\ndescription: Big spenders\nparams:      [1000]\n\
             created_at:  2024-05-01T12:30:00\nupdated_at:  2024-05-01T12:30:00\nsql:\n\
             \x20   SELECT email\n    FROM customers WHERE spend > $1\n"
        );
    }

    #[test]
    fn list_shows_a_missing_description_as_show_does() {
        let query = SavedQuery {
            name: "vip".into(),
            description: None,
            sql: "SELECT 1".into(),
            params: Vec::new(),
            created_at: None,
            updated_at: None,
        };
        assert_eq!(listing_row(&query)["description"], json!("-"));
    }
}
