//! `klsync state unlock RUN_ID`: release an apply lock its run will not release (Terraform's
//! `force-unlock`). `apply` and `import` take the lock through [`super::session::AuditedRun`].
//!
//! Unlocking is for a lock klsync cannot judge abandoned by itself: a run on another host
//! whose heartbeat is still recent, or a process that hangs. A lock whose holder is certainly
//! gone (its process no longer exists on this host, its heartbeat stopped on another, its
//! PostgreSQL session ended) is taken over by the next apply without help, with a message.
//!
//! Refused, changing nothing, when RUN_ID is not the holder (the message names the holder), and
//! on PostgreSQL while a live session holds the advisory lock: only the server can end it, so
//! the message names that session's backend pid for `pg_terminate_backend`. Asks for
//! confirmation on a terminal (only `yes`); without one it needs `--force` (`-y`). A release is
//! recorded in the audit history as a `state unlock` run. Exit 0 when released, 1 otherwise.

use std::io::IsTerminal as _;

use serde_json::json;

use super::session::runtime;
use crate::cli::{StateArgs, StateCommand, UnlockArgs};
use crate::context;
use crate::duration::human_duration;
use crate::error::{Error, ExitStatus};
use crate::run::Output;
use crate::state::{
    HEARTBEAT_EVERY, LockInfo, RunOutcome, RunStart, StateError, StateStore, detect_actor,
    detect_git_commit,
};

/// Run `klsync state ...`.
pub fn run(args: &StateArgs, output: &Output) -> Result<ExitStatus, Error> {
    match &args.command {
        StateCommand::Unlock(args) => {
            let interactive = std::io::stdin().is_terminal();
            runtime()?.block_on(unlock(args, output, interactive))
        }
    }
}

async fn unlock(
    args: &UnlockArgs,
    output: &Output,
    interactive: bool,
) -> Result<ExitStatus, Error> {
    let dir = &args.project.dir;
    let settings = super::import::settings(dir)?;
    let url = context::state_url(&settings, dir, &context::process_env);
    // Reading must not create a state database: without one nothing is locked.
    if url == StateStore::default_url(dir) && !dir.join(".klsync/state.db").exists() {
        return Err(StateError::NotLocked.into());
    }
    let store = context::connect_state(&url).await?;
    let result = unlock_in(&store, args, output, interactive).await;
    store.close().await;
    result
}

async fn unlock_in(
    store: &StateStore,
    args: &UnlockArgs,
    output: &Output,
    interactive: bool,
) -> Result<ExitStatus, Error> {
    // Everything that would refuse is checked before asking; `force_unlock` checks it again
    // atomically.
    let holder = store.lock_holder().await?.ok_or(StateError::NotLocked)?;
    if !holder.is_run(&args.run_id) {
        return Err(StateError::UnlockOtherRun {
            asked: args.run_id.clone(),
            holder: holder.description,
        }
        .into());
    }
    if let Some(session) = &holder.session {
        return Err(StateError::LiveSession {
            holder: holder.description.clone(),
            backend_pid: session.backend_pid,
            client: session.client.clone(),
        }
        .into());
    }
    if !args.force {
        confirm(&holder, interactive)?;
    }
    let start = RunStart {
        command: "state unlock".to_owned(),
        actor: detect_actor(),
        git_commit: detect_git_commit(&args.project.dir),
        manifest_digest: None,
        plan_id: None,
    };
    let run_id = store.begin_run(&start).await?;
    let released = store.force_unlock(&args.run_id).await;
    let (outcome, summary) = match &released {
        Ok(info) => (
            RunOutcome::Success,
            json!({"released": info.run_id, "holder": info.description}),
        ),
        Err(err) => (RunOutcome::Failed, json!({"error": err.to_string()})),
    };
    store.finish_run(run_id, outcome, &summary).await?;
    let released = released?;
    if !output.quiet {
        eprintln!("Released the apply lock of {}.", released.description);
        if released.process_alive == Some(true) {
            eprintln!("{}", still_running_note());
        }
    }
    Ok(ExitStatus::Success)
}

fn still_running_note() -> String {
    format!(
        "Its process still runs on this host: it finds the lock gone at its next heartbeat (within {}) and stops before sending more.",
        human_duration(HEARTBEAT_EVERY)
    )
}

/// Ask on the terminal; only `yes` releases.
fn confirm(holder: &LockInfo, interactive: bool) -> Result<(), Error> {
    if !interactive {
        return Err(Error::Config(format!(
            "state unlock needs confirmation, and stdin is not a terminal; pass --force (-y) to release the lock of {}",
            holder.description
        )));
    }
    eprintln!("The apply lock is held by {}.", holder.description);
    match holder.process_alive {
        Some(true) => eprintln!("{}", still_running_note()),
        Some(false) => eprintln!("Its process no longer runs on this host."),
        None => eprintln!(
            "It runs on another host: make sure that apply is no longer running there, or two applies may interleave."
        ),
    }
    if super::answered_yes("Release it?")? {
        Ok(())
    } else {
        Err(Error::Config(
            "state unlock cancelled; the lock is still held".to_owned(),
        ))
    }
}
