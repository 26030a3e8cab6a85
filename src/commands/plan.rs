//! `klsync plan`: show what `apply` would change in Klaviyo and what it costs.
//!
//! The plan goes to stdout in the chosen format; `--out FILE` also saves it as JSON for
//! `klsync apply FILE`, after registering the file's digest in klsync's state (the one row
//! `plan` writes: `apply` takes only a file registered there, see `crate::apply::saved`).
//! Exit status: 0, or with `--detailed-exitcode` 0 for no changes and 2 for changes; 1 on any
//! error. Nothing is written to Klaviyo.
//!
//! When the manifests declare data syncs (`profiles:`, `members:` on lists) the plan also runs
//! their queries on the database named by `database.url_env` and carries the counts as its data
//! part (`sync::plan_data`); `--refresh` then also reads the sampled profiles from Klaviyo to
//! report drift, after saying what that costs, and `--refresh=full` first reads back everything
//! the data syncs recorded (`sync::check_data`, as `klsync drift --data` does) and plans the
//! changes that restore what was changed in Klaviyo.

use std::path::Path;

use chrono::{SecondsFormat, Utc};
use futures::future::Either;

use super::session::{Connection, list_ids, load, print_stdout, runtime, write_atomically};
use crate::apply::managed_state;
use crate::apply::saved::plan_id as saved_plan_id;
use crate::cli::{PlanArgs, PlanFormat, Refresh};
use crate::context::{self, EnvLookup, Pacing};
use crate::error::{Error, ExitStatus};
use crate::klaviyo::observe::read_live;
use crate::manifest::{self, Project};
use crate::model::{DesiredState, LiveState, ResourceKind};
use crate::plan::{self, Action, Plan, PlanMeta};
use crate::render;
use crate::run::Output;
use crate::state::{ManagedRow, SavedPlanRecord, StateStore, detect_actor};
use crate::sync::{self, DataPlan};

/// Run `klsync plan`.
pub fn run(args: &PlanArgs, output: &Output) -> Result<ExitStatus, Error> {
    runtime()?.block_on(plan_command(
        args,
        output,
        &context::process_env,
        Pacing::Published,
    ))
}

/// `klsync plan` with the environment read through `env`.
pub(crate) async fn plan_command(
    args: &PlanArgs,
    output: &Output,
    env: EnvLookup<'_>,
    pacing: Pacing,
) -> Result<ExitStatus, Error> {
    let project = load(&args.project.dir, output)?;
    let connection = Connection::open(&project, env, pacing, output).await?;
    let planned = async {
        let check = match args.refresh {
            Some(Refresh::Full) => Some(
                super::drift::check_data_syncs(
                    &project,
                    &connection.store,
                    &connection.client,
                    output,
                    crate::sync::CheckScope::FULL,
                )
                .await?,
            ),
            _ => None,
        };
        let reading = output
            .progress()
            .spinner("Reading Klaviyo and running the data queries");
        let request = PlanRequest {
            check: check.as_ref(),
            targets: &args.target,
            resync: &args.resync,
        };
        let planned = connection.plan_checked(&project, &request).await;
        reading.finish_and_clear();
        let mut planned = planned?;
        if args.refresh == Some(Refresh::Sample) {
            connection.refresh(&mut planned.plan, output).await?;
        }
        Ok::<_, Error>(planned)
    }
    .await;
    output.metrics.add_client(&connection.client.metrics());
    let saved = match (&planned, &args.out) {
        (Ok(planned), Some(out)) => Some(save(&connection.store, &planned.plan, out).await),
        _ => None,
    };
    connection.close().await;
    let planned = planned?;
    let saved = saved.transpose()?;
    let plan = &planned.plan;
    if let Some(data) = &plan.data {
        output.metrics.add_rows_read(data_rows(data));
    }
    let rendered = match args.format {
        PlanFormat::Text => render::text_with(plan, output.color, args.detail),
        PlanFormat::Markdown => render::markdown(plan),
        PlanFormat::Json => render::json(plan),
    };
    print_stdout(&rendered);
    // In brief (the demo) the steps that follow say what becomes of the saved plan.
    if let (Some(out), Some(plan_id)) = (&args.out, saved)
        && !output.quiet
        && args.detail.full
    {
        eprintln!(
            "Saved plan {plan_id} to {0}; apply exactly it with `klsync apply {0}`.",
            out.display()
        );
    }
    Ok(if args.detailed_exitcode && !plan.is_empty() {
        ExitStatus::Changes
    } else {
        ExitStatus::Success
    })
}

/// Register the plan's file in the state, then write it: a file on disk was always registered
/// (a file that failed to be written leaves only a harmless row). Returns the plan's id.
async fn save(store: &StateStore, plan: &Plan, out: &Path) -> Result<String, Error> {
    let text = render::json(plan);
    let plan_id = saved_plan_id(&text);
    store
        .register_saved_plan(&SavedPlanRecord {
            plan_id: plan_id.clone(),
            manifest_digest: plan.meta.manifest_digest.clone(),
            created_at: plan.meta.created_at.clone(),
            actor: detect_actor(),
        })
        .await?;
    write_atomically(out, &text)?;
    Ok(plan_id)
}

/// Rows the data part's queries returned.
pub(crate) fn data_rows(data: &DataPlan) -> u64 {
    data.profiles.iter().map(|p| p.rows).sum::<u64>()
        + data.memberships.iter().map(|m| m.rows).sum::<u64>()
}

/// A plan and what it was made from.
pub(crate) struct Planned {
    /// The plan.
    pub plan: Plan,
    /// What the manifests ask for.
    pub desired: DesiredState,
    /// Klaviyo as read.
    pub live: LiveState,
    /// klsync's managed rows as read.
    pub managed: Vec<ManagedRow>,
}

/// Planning on a project's connection, for `plan` and for `apply`.
impl Connection {
    /// Read the sampled profiles of the data part from Klaviyo (`plan --refresh`), after
    /// saying what that costs.
    pub(crate) async fn refresh(&self, plan: &mut Plan, output: &Output) -> Result<(), Error> {
        let Some(data) = &mut plan.data else {
            return Ok(());
        };
        if !output.quiet {
            eprintln!(
                "Refreshing: reading the sampled profiles from Klaviyo ({} request(s)).",
                data.refresh_requests()
            );
        }
        sync::refresh_data(data, &self.store, &self.client).await?;
        Ok(())
    }

    /// Read klsync's state and Klaviyo, run the data queries, and plan as `request` says.
    pub(crate) async fn plan_checked(
        &self,
        project: &Project,
        request: &PlanRequest<'_>,
    ) -> Result<Planned, Error> {
        let merged = project.merged();
        let desired = DesiredState::from_manifest(&merged);
        let managed = self.store.managed().await?;
        let resync = resync_syncs(&merged, request.resync)?;
        let list_ids = list_ids(&managed);
        // The data queries need nothing from Klaviyo, so they run while Klaviyo is read (a few
        // round trips over the internet). A Klaviyo failure is the one reported, as if Klaviyo
        // were read first: it ends the queries at once, and a query's failure waits for the
        // reads.
        // Lists this plan creates have no id yet: their members are planned all as adds, and
        // apply fills the id in once the list exists.
        let planning_data = std::pin::pin!(async {
            match &self.queries {
                Some(queries) => sync::plan_data(
                    &merged,
                    &list_ids,
                    queries,
                    &self.store,
                    request.check,
                    &resync,
                )
                .await
                .map(Some),
                None => Ok(None),
            }
        });
        let reading = std::pin::pin!(read_live(&self.client));
        let (live, data) = match futures::future::select(reading, planning_data).await {
            Either::Left((live, planning_data)) => (live?, planning_data.await),
            Either::Right((data, reading)) => (reading.await?, data),
        };
        let meta = PlanMeta {
            created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            manifest_digest: project.digest(),
            klsync_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let mut plan = plan::diff(&desired, &live, &managed_state(&managed)?, meta)?;
        if let Some(data) = data.map_err(|err| err.declared_in(project))? {
            let recreated = recreated_list_warnings(&plan, &data);
            plan.warnings.extend(recreated);
            plan = plan.with_data(data);
        }
        plan = plan::targeted(
            plan,
            request.targets,
            &known_addresses(&desired, &merged, &managed),
        )?;
        let metrics = self.client.metrics();
        plan.scopes = plan::required_scopes(&plan, metrics.requests.keys().map(String::as_str));
        Ok(Planned {
            plan,
            desired,
            live,
            managed,
        })
    }
}

/// What a plan is asked for beyond the manifests.
#[derive(Default)]
pub(crate) struct PlanRequest<'a> {
    /// The full check (`plan --refresh=full`): the data part restores what it found changed
    /// in Klaviyo.
    pub check: Option<&'a sync::DataCheck>,
    /// `--target`: only these addresses and what they need.
    pub targets: &'a [String],
    /// `--resync`: data syncs whose every row is sent again.
    pub resync: &'a [String],
}

/// The data syncs `--resync` names, as `profiles.ID` and `list.KEY.members`. A bare id names a
/// `profiles:` sync, else a list with `members:`; `list.KEY` names that list's members.
fn resync_syncs(
    manifest: &manifest::ManifestFile,
    names: &[String],
) -> Result<std::collections::BTreeSet<String>, Error> {
    let profiles: Vec<String> = manifest
        .profiles
        .iter()
        .map(|sync| format!("profiles.{}", sync.id))
        .collect();
    let members: Vec<String> = manifest
        .lists
        .iter()
        .filter(|list| list.members.is_some())
        .map(|list| format!("list.{}.members", list.id))
        .collect();
    names
        .iter()
        .map(|name| {
            let candidates = [
                name.clone(),
                format!("profiles.{name}"),
                format!("{name}.members"),
                format!("list.{name}.members"),
            ];
            candidates
                .into_iter()
                .find(|candidate| profiles.contains(candidate) || members.contains(candidate))
                .ok_or_else(|| {
                    let all: Vec<&str> =
                        profiles.iter().chain(&members).map(String::as_str).collect();
                    Error::Config(format!(
                        "--resync {name}: the project has no such data sync; its data syncs are: {}",
                        if all.is_empty() { "none".to_owned() } else { all.join(", ") }
                    ))
                })
        })
        .collect()
}

/// Every address `--target` may name: declared or managed resources, and profile syncs.
fn known_addresses(
    desired: &DesiredState,
    manifest: &manifest::ManifestFile,
    managed: &[ManagedRow],
) -> std::collections::BTreeSet<String> {
    use crate::model::ResourceKey;
    let declared = [
        (
            ResourceKind::TagGroup,
            desired.tag_groups.keys().collect::<Vec<_>>(),
        ),
        (ResourceKind::Tag, desired.tags.keys().collect()),
        (ResourceKind::List, desired.lists.keys().collect()),
        (ResourceKind::Segment, desired.segments.keys().collect()),
    ];
    declared
        .into_iter()
        .flat_map(|(kind, keys)| {
            keys.into_iter()
                .map(move |key| ResourceKey::new(kind, key).address())
        })
        .chain(
            managed
                .iter()
                .map(|row| format!("{}.{}", row.kind, row.key)),
        )
        .chain(
            manifest
                .profiles
                .iter()
                .map(|sync| format!("profiles.{}", sync.id)),
        )
        .collect()
}

/// Keys of the lists `plan` creates (first creates, or lists deleted outside klsync).
pub(crate) fn created_lists(plan: &Plan) -> impl Iterator<Item = &str> {
    plan.changes.iter().filter_map(|change| {
        let resource = change.resource.as_ref()?;
        (resource.kind == ResourceKind::List && change.action == Action::Create)
            .then_some(resource.key.as_str())
    })
}

/// The lists `plan` creates or adopts: their members syncs wait for the change that gives the
/// list its id ([`sync::ListGiven`]).
pub(crate) fn lists_given_ids(plan: &Plan) -> std::collections::BTreeMap<String, sync::ListGiven> {
    plan.changes
        .iter()
        .filter_map(|change| {
            let resource = change.resource.as_ref()?;
            let given = match change.action {
                _ if resource.kind != ResourceKind::List => return None,
                Action::Create => sync::ListGiven::Created,
                Action::Adopt => sync::ListGiven::Adopted,
                _ => return None,
            };
            Some((resource.key.clone(), given))
        })
        .collect()
}

/// A list created again starts empty, so apply forgets the members klsync recorded for it and
/// adds them again; the data plan, made from the records, counts them as unchanged.
fn recreated_list_warnings(plan: &Plan, data: &DataPlan) -> Vec<String> {
    let created: Vec<&str> = created_lists(plan).collect();
    data.memberships
        .iter()
        .filter(|list| created.contains(&list.list.as_str()))
        .filter(|list| list.counts.unchanged + list.counts.remove > 0)
        .map(|list| {
            format!(
                "list.{} is created again: the {} member(s) klsync recorded for it are forgotten, and apply adds the query's members anew (this plan counts {} of them as unchanged)",
                list.list,
                list.counts.unchanged + list.counts.remove,
                list.counts.unchanged
            )
        })
        .collect()
}
