//! `--target ADDRESS`: plan and apply only some resources and what they need, as Terraform's
//! `-target` does, for an urgent fix or a first careful step on a big account.
//!
//! What an address selects:
//! * `tag_group.NAME`, `tag.KEY`: that resource's change.
//! * `list.KEY`, `segment.KEY`: the resource's change, its tag links (they are declared on it),
//!   and for a list the sync of its `members:`.
//! * `list.KEY.members`: only that list's members sync.
//! * `profiles.ID`: only that `profiles:` sync.
//!
//! What a selected change depends on (`depends_on`: the tag group of a new tag, the tag of a
//! new link, the list a segment names when this plan creates it, a new list whose members are
//! synced) comes along, transitively. An address the project does not know is refused, naming
//! the forms above; a known one with nothing to change selects nothing. The targeted plan keeps
//! its targets, so `apply PLAN_FILE` compares it with a fresh plan targeted the same way.

use std::collections::BTreeSet;

use super::{Change, Plan, PlanError, cost};

/// One `--target`, parsed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// A configuration resource (`kind.key`), with its links and (for a list) its members.
    Resource(String),
    /// Only the members sync of the list with this key.
    Members(String),
    /// Only the `profiles:` sync with this id.
    Profiles(String),
}

fn parse(address: &str) -> Option<Target> {
    if let Some(id) = address.strip_prefix("profiles.") {
        return (!id.is_empty()).then(|| Target::Profiles(address.to_owned()));
    }
    if let Some(list) = address
        .strip_prefix("list.")
        .and_then(|rest| rest.strip_suffix(".members"))
    {
        return Some(Target::Members(list.to_owned()));
    }
    let (kind, key) = address.split_once('.')?;
    (["tag_group", "tag", "list", "segment"].contains(&kind) && !key.is_empty())
        .then(|| Target::Resource(address.to_owned()))
}

/// `plan` restricted to `targets` and what they depend on. `known` holds the addresses the
/// project has (declared, or managed by klsync) and the `profiles.ID` of every profile sync.
pub fn targeted(
    mut plan: Plan,
    targets: &[String],
    known: &BTreeSet<String>,
) -> Result<Plan, PlanError> {
    if targets.is_empty() {
        return Ok(plan);
    }
    let mut parsed = BTreeSet::new();
    for address in targets {
        let target = parse(address).ok_or_else(|| PlanError::UnknownTarget {
            address: address.clone(),
        })?;
        let resource = match &target {
            Target::Resource(address) | Target::Profiles(address) => address.clone(),
            Target::Members(list) => format!("list.{list}"),
        };
        if !known.contains(&resource) {
            return Err(PlanError::UnknownTarget {
                address: address.clone(),
            });
        }
        parsed.insert(target);
    }

    let resources: BTreeSet<&str> = parsed
        .iter()
        .filter_map(|target| match target {
            Target::Resource(address) => Some(address.as_str()),
            _ => None,
        })
        .collect();
    let member_lists: BTreeSet<String> = parsed
        .iter()
        .filter_map(|target| match target {
            Target::Resource(address) => address.strip_prefix("list.").map(str::to_owned),
            Target::Members(list) => Some(list.clone()),
            Target::Profiles(_) => None,
        })
        .collect();
    let profile_syncs: BTreeSet<String> = parsed
        .iter()
        .filter_map(|target| match target {
            Target::Profiles(address) => address.strip_prefix("profiles.").map(str::to_owned),
            _ => None,
        })
        .collect();

    let selected = |change: &Change| {
        let own = change
            .resource
            .as_ref()
            .is_some_and(|key| resources.contains(key.address().as_str()));
        let link = change
            .link
            .as_ref()
            .is_some_and(|link| resources.contains(link.target.address().as_str()));
        own || link
    };
    let mut keep: BTreeSet<String> = plan
        .changes
        .iter()
        .filter(|change| selected(change))
        .map(|change| change.address.clone())
        .collect();
    // A synced list this plan creates must be created first.
    for list in &member_lists {
        keep.insert(format!("list.{list}"));
    }
    // What the kept changes depend on, transitively (dependencies are changes of this plan).
    loop {
        let needed: Vec<String> = plan
            .changes
            .iter()
            .filter(|change| keep.contains(&change.address))
            .flat_map(|change| change.depends_on.iter())
            .filter(|address| !keep.contains(*address))
            .cloned()
            .collect();
        if needed.is_empty() {
            break;
        }
        keep.extend(needed);
    }
    let total = plan.changes.len();
    plan.changes.retain(|change| keep.contains(&change.address));
    let requests = cost::requests(&plan.changes);
    plan.cost = cost::cost(&plan.changes, &requests);
    plan.warnings
        .retain(|warning| !warning.starts_with("the plan needs "));
    plan.warnings.extend(cost::daily_cap_warnings(&requests));
    if let Some(data) = &mut plan.data {
        data.retain(
            |id| profile_syncs.contains(id),
            |list| member_lists.contains(list),
        );
        // The one estimate covers the data syncs kept.
        plan.cost.estimated_seconds =
            cost::whole_seconds(cost::estimate(&plan.changes, Some(data)));
    }
    plan.warnings.push(format!(
        "targeted plan (--target {}): {} of the project's {total} change(s), and only the data syncs named; \
         the rest of the project is neither planned nor applied. Plan without --target before long: \
         the state may now differ from the manifests in ways this plan does not show",
        targets.join(" --target "),
        plan.changes.len(),
    ));
    plan.targets = targets.to_vec();
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_by_kind() {
        assert_eq!(parse("list.vip"), Some(Target::Resource("list.vip".into())));
        assert_eq!(
            parse("list.vip.members"),
            Some(Target::Members("vip".into()))
        );
        assert_eq!(
            parse("profiles.ltv"),
            Some(Target::Profiles("profiles.ltv".into()))
        );
        assert_eq!(
            parse("tag.stage/lead"),
            Some(Target::Resource("tag.stage/lead".into()))
        );
        assert_eq!(parse("vip"), None);
        assert_eq!(parse("tag_link.x->list.vip"), None);
        assert_eq!(parse("list."), None);
    }
}
