//! The full check of the data syncs against Klaviyo: read back what klsync recorded and find
//! what was changed there by hand. One mechanism, shared by `klsync plan --refresh=full` (which
//! then plans the changes that restore it) and `klsync drift --data` (which reports it), and
//! the base of the sampled `plan --refresh` too:
//!
//! - a `profiles:` sync: every recorded row's profile is read (`GET /api/profiles` filtered by
//!   `any(identifier,[...])`, 100 identifiers a request), and each property klsync recorded with
//!   a value is compared with Klaviyo's (a profile that no longer exists differs in all of them);
//! - a list's `members:`: the members klsync recorded (those it added and those it found there)
//!   are looked up on the list (`GET /api/lists/{id}/profiles` filtered by `any(email,[...])` or
//!   `any(phone_number,[...])`, 100 a request; a list keyed by `external_id` is read whole,
//!   since the endpoint cannot filter by it), and those no longer on it are reported. Members an
//!   apply sent without learning the outcome are not looked up: the next apply confirms them.
//!
//! With [`CheckScope::whole_lists`] (`klsync drift --members`), each list is read whole instead
//! (`GET /api/lists/{id}/profiles`, 100 members a page, whatever its key), which also finds what
//! lookups cannot: members klsync removed (`sync_list_removals`) that are on the list again, by
//! profile id or identifier; recorded members are matched by profile id too, so a member whose
//! email was changed in Klaviyo is not reported missing. Removals klsync owes but could not make
//! (recorded with `removal_pending`) are reported as well.
//!
//! [`check_cost`] says what the check costs from klsync's records alone, before anything is
//! read, so the commands can print it first.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value};

use super::{
    CheckCost, CheckScope, DataCheck, Drift, LOOKUPS_IN_FLIGHT, MembershipCheck, ProfileCheck,
    SyncError,
};
use crate::klaviyo::{KlaviyoClient, Operation};
use crate::manifest::types::{IdentifyBy, ManifestFile};
use crate::state::{MemberOrigin, RemovedMember, StateStore, SyncMemberRecord};

/// Identifiers per `any(...)` filter (and members per page of a list read whole).
const PER_LOOKUP: usize = crate::klaviyo::limits::PROFILE_FILTER_BATCH;
/// Recorded rows read from the state at a time.
const PAGE: usize = 1_000;

/// What [`check_data`] will send for `manifest`'s syncs, from klsync's records alone.
/// `list_ids`: the Klaviyo ids of the lists that exist (others are not checked).
pub async fn check_cost(
    manifest: &ManifestFile,
    list_ids: &BTreeMap<String, String>,
    store: &StateStore,
    scope: CheckScope,
) -> Result<CheckCost, SyncError> {
    let mut cost = CheckCost {
        whole_lists: scope.whole_lists,
        ..CheckCost::default()
    };
    for spec in manifest.profiles.iter().filter(|_| scope.profiles) {
        let rows = store.sync_row_count(&spec.id).await?;
        *cost.requests.entry(Operation::GetProfiles).or_default() +=
            rows.div_ceil(PER_LOOKUP as u64);
    }
    for list in &manifest.lists {
        let Some(members) = &list.members else {
            continue;
        };
        if !list_ids.contains_key(&list.id) {
            continue;
        }
        let recorded = store.sync_member_count(&list.id).await?;
        let whole = scope.whole_lists || members.identify_by == IdentifyBy::ExternalId;
        if whole {
            cost.read_whole.push(list.id.clone());
        }
        let pages = if scope.whole_lists {
            // At least one page, even for a list klsync recorded nothing for.
            recorded.div_ceil(PER_LOOKUP as u64).max(1)
        } else {
            member_lookup_requests(members.identify_by, recorded, recorded)
        };
        *cost
            .requests
            .entry(Operation::GetProfilesForList)
            .or_default() += pages;
    }
    cost.requests.retain(|_, count| *count > 0);
    Ok(cost)
}

/// Read back from Klaviyo every profile and list member klsync recorded for `manifest`'s syncs
/// (costs [`check_cost`]) and report what differs; `scope` says what is read. Lists with no id
/// in `list_ids` are skipped.
pub async fn check_data(
    manifest: &ManifestFile,
    list_ids: &BTreeMap<String, String>,
    store: &StateStore,
    client: &KlaviyoClient,
    scope: CheckScope,
) -> Result<DataCheck, SyncError> {
    let mut check = DataCheck::default();
    for spec in manifest.profiles.iter().filter(|_| scope.profiles) {
        check
            .profiles
            .push(check_profiles(&spec.id, spec.identify_by, store, client).await?);
    }
    for list in &manifest.lists {
        let (Some(members), Some(list_id)) = (&list.members, list_ids.get(&list.id)) else {
            continue;
        };
        let found = check_list(
            &list.id,
            list_id,
            members.identify_by,
            scope.whole_lists,
            store,
            client,
        )
        .await?;
        check.memberships.push(found);
    }
    Ok(check)
}

/// Page through a sync's recorded rows and compare each with its profile in Klaviyo.
async fn check_profiles(
    sync_id: &str,
    identify_by: IdentifyBy,
    store: &StateStore,
    client: &KlaviyoClient,
) -> Result<ProfileCheck, SyncError> {
    let mut check = ProfileCheck {
        id: sync_id.to_string(),
        checked: 0,
        drift: Vec::new(),
    };
    let mut after = String::new();
    loop {
        let page = store.sync_rows_after(sync_id, &after, PAGE).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = last.clone();
        check.checked += page.len() as u64;
        let identifiers: Vec<String> = page.iter().map(|(id, _)| id.clone()).collect();
        let live = live_properties(client, identify_by, &identifiers).await?;
        for (identifier, applied) in &page {
            check
                .drift
                .extend(property_drift(identifier, applied, live.get(identifier)));
        }
    }
    Ok(check)
}

/// Klaviyo's custom properties of the profiles with these identifiers, by normalised
/// identifier; a profile that does not exist is absent. One request per 100 identifiers.
pub(super) async fn live_properties(
    client: &KlaviyoClient,
    identify_by: IdentifyBy,
    identifiers: &[String],
) -> Result<HashMap<String, Map<String, Value>>, SyncError> {
    let kind = super::profile_identifier(identify_by);
    let found: Vec<Vec<crate::klaviyo::Profile>> = futures::stream::iter(
        identifiers
            .chunks(PER_LOOKUP)
            .map(|chunk| client.find_profiles_by(kind, chunk)),
    )
    .buffered(LOOKUPS_IN_FLIGHT)
    .try_collect()
    .await?;
    Ok(found
        .into_iter()
        .flatten()
        .filter_map(|profile| {
            let identifier = super::identifier_of(identify_by, &profile.attributes)?;
            Some((identifier, profile.attributes.properties))
        })
        .collect())
}

/// The properties klsync recorded with a value (`applied`, a JSON object) whose value in
/// Klaviyo (`live`, `None` for no such profile) differs.
pub(super) fn property_drift(
    identifier: &str,
    applied: &Value,
    live: Option<&Map<String, Value>>,
) -> Vec<Drift> {
    let Some(applied) = applied.as_object() else {
        return Vec::new();
    };
    let mut drift: Vec<Drift> = applied
        .iter()
        .filter(|(_, value)| !value.is_null())
        .filter_map(|(property, value)| {
            let now = live.and_then(|properties| properties.get(property));
            (now != Some(value)).then(|| Drift {
                identifier: identifier.to_string(),
                property: property.clone(),
                applied: Some(value.clone()),
                live: now.cloned(),
            })
        })
        .collect();
    drift.sort_by(|a, b| a.property.cmp(&b.property));
    drift
}

/// Compare a list with the members klsync recorded for it as added or found there (not those
/// sent without a known outcome). Without `whole`, the recorded members are looked up on the
/// list; with it, the list is read whole ([`read_members`]). A list Klaviyo no longer has
/// checked nothing.
async fn check_list(
    list_key: &str,
    list_id: &str,
    identify_by: IdentifyBy,
    whole: bool,
    store: &StateStore,
    client: &KlaviyoClient,
) -> Result<MembershipCheck, SyncError> {
    let recorded: Vec<SyncMemberRecord> = store
        .sync_members(list_key)
        .await?
        .into_iter()
        .filter(|m| !matches!(m.origin, MemberOrigin::Sent { .. }))
        .collect();
    let check = MembershipCheck::of(list_key, recorded.len());
    let found = if whole {
        let removed = store.removed_members(list_key).await?;
        read_members(check, recorded, removed, list_id, identify_by, client).await?
    } else {
        look_up_members(check, recorded, list_id, identify_by, client).await?
    };
    Ok(found.unwrap_or_else(|| MembershipCheck::deleted(list_key)))
}

/// Look the recorded members up on the list: those not found are missing.
async fn look_up_members(
    mut check: MembershipCheck,
    recorded: Vec<SyncMemberRecord>,
    list_id: &str,
    identify_by: IdentifyBy,
    client: &KlaviyoClient,
) -> Result<Option<MembershipCheck>, SyncError> {
    let recorded: Vec<String> = recorded.into_iter().map(|m| m.identifier).collect();
    let Some(on_list) =
        list_or_deleted(members_on_list(client, list_id, identify_by, &recorded).await)?
    else {
        return Ok(None);
    };
    check.missing = recorded
        .into_iter()
        .filter(|identifier| !on_list.contains_key(identifier))
        .collect();
    check.missing.sort();
    Ok(Some(check))
}

/// A read of a list's members, or `None` when the list no longer exists (404).
fn list_or_deleted<T>(read: Result<T, SyncError>) -> Result<Option<T>, SyncError> {
    match read {
        Ok(found) => Ok(Some(found)),
        Err(SyncError::Api(error)) if error.status() == Some(404) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Read the list whole and compare it with what klsync recorded for it: recorded members not
/// on it (by profile id or identifier), members klsync `removed` that are on it again, and the
/// removals klsync owes but could not make.
async fn read_members(
    mut check: MembershipCheck,
    recorded: Vec<SyncMemberRecord>,
    removed: Vec<RemovedMember>,
    list_id: &str,
    identify_by: IdentifyBy,
    client: &KlaviyoClient,
) -> Result<Option<MembershipCheck>, SyncError> {
    // Streamed into two sets (ids, identifiers), so a list of millions never sits in memory as
    // whole profiles.
    let mut ids: HashSet<String> = HashSet::new();
    let mut identifiers: HashSet<String> = HashSet::new();
    let read = client
        .list_member_profiles(list_id)
        .map_err(SyncError::from)
        .try_for_each(|profile| {
            if let Some(identifier) = super::identifier_of(identify_by, &profile.attributes) {
                identifiers.insert(identifier);
            }
            ids.insert(profile.id);
            futures::future::ready(Ok(()))
        })
        .await;
    if list_or_deleted(read)?.is_none() {
        return Ok(None);
    }
    let on_list = |identifier: &str, profile_id: Option<&str>| {
        profile_id.is_some_and(|id| ids.contains(id)) || identifiers.contains(identifier)
    };
    for member in recorded {
        if let Some(pending) = member.removal_pending {
            check.pending_removals.push(super::FailedRow {
                identifier: member.identifier,
                reason: pending.reason,
            });
        } else if !on_list(&member.identifier, member.profile_id.as_deref()) {
            check.missing.push(member.identifier);
        }
    }
    check.back_on_list = removed
        .into_iter()
        .filter(|m| on_list(&m.identifier, m.profile_id.as_deref()))
        .map(|m| m.identifier)
        .collect();
    Ok(Some(check))
}

/// The requests [`members_on_list`] sends to look `identifiers` up on a list of
/// `known_members` members: one per 100 identifiers for emails and phone numbers (the endpoint
/// filters by them), whatever the list's size; for external ids, which it cannot filter by,
/// one per 100 members, at least one (members who joined another way add pages nobody can
/// foresee, so this is a lower bound).
pub(super) fn member_lookup_requests(
    identify_by: IdentifyBy,
    identifiers: u64,
    known_members: u64,
) -> u64 {
    if identifiers == 0 {
        0
    } else if identify_by == IdentifyBy::ExternalId {
        known_members.div_ceil(PER_LOOKUP as u64).max(1)
    } else {
        identifiers.div_ceil(PER_LOOKUP as u64)
    }
}

/// Which of `identifiers` are members of the list, with their profile ids: one filtered
/// request per 100 for emails and phone numbers, the whole list (one request per 100 members)
/// for external ids. (A list read whole may yield members beyond `identifiers`.)
pub(super) async fn members_on_list(
    client: &KlaviyoClient,
    list_id: &str,
    identify_by: IdentifyBy,
    identifiers: &[String],
) -> Result<HashMap<String, String>, SyncError> {
    let profiles: Vec<crate::klaviyo::Profile> = if identify_by == IdentifyBy::ExternalId {
        client.list_member_profiles(list_id).try_collect().await?
    } else {
        let kind = super::profile_identifier(identify_by);
        let found: Vec<Vec<crate::klaviyo::Profile>> = futures::stream::iter(
            identifiers
                .chunks(PER_LOOKUP)
                .map(|chunk| client.list_members_among(list_id, kind, chunk)),
        )
        .buffered(LOOKUPS_IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await?;
        found.into_iter().flatten().collect()
    };
    Ok(profiles
        .into_iter()
        .filter_map(|profile| {
            Some((
                super::identifier_of(identify_by, &profile.attributes)?,
                profile.id,
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn recorded_values_that_differ_or_are_gone_drift_and_nulls_never_do() {
        let applied = json!({"plan": "gold", "ltv": 5, "note": null, "tier": 1});
        let live = json!({"plan": "silver", "ltv": 5, "note": "hand-written"});
        let drift = property_drift("a@x.test", &applied, live.as_object());
        let found: Vec<(&str, Option<Value>)> = drift
            .iter()
            .map(|d| (d.property.as_str(), d.live.clone()))
            .collect();
        assert_eq!(found, [("plan", Some(json!("silver"))), ("tier", None)]);
        // No profile at all: every recorded value is gone.
        assert_eq!(property_drift("a@x.test", &applied, None).len(), 3);
        let check = ProfileCheck {
            id: "customers".into(),
            checked: 2,
            drift,
        };
        assert_eq!(check.drifted_profiles(), 1);
        assert_eq!(
            check.live_values()["a@x.test"],
            [("plan", Some(&json!("silver"))), ("tier", None)]
        );
    }

    #[test]
    fn a_deleted_list_checked_nothing_and_found_nothing() {
        let check = MembershipCheck::deleted("vip");
        assert!(check.list_deleted);
        assert_eq!(check.checked, 0);
        assert_eq!(check.list, "vip");
        assert!(check.missing.is_empty() && check.back_on_list.is_empty());
        assert!(check.pending_removals.is_empty());
    }

    #[test]
    fn the_cost_is_said_up_front_with_its_bound() {
        let exact = CheckCost {
            requests: BTreeMap::from([
                (Operation::GetProfiles, 10),
                (Operation::GetProfilesForList, 2),
            ]),
            read_whole: Vec::new(),
            whole_lists: false,
        };
        let sentence = exact.sentence();
        assert!(
            sentence.starts_with(
                "Checking the data syncs against Klaviyo: 12 request(s) (get_profiles 10, get_profiles_for_list 2), at least "
            ),
            "{sentence}"
        );
        let bounded = CheckCost {
            requests: BTreeMap::from([(Operation::GetProfilesForList, 1)]),
            read_whole: vec!["vip".into()],
            whole_lists: false,
        };
        let sentence = bounded.sentence();
        assert!(sentence.contains("at least 1 request(s)"), "{sentence}");
        assert_eq!(
            CheckCost::default().sentence(),
            "Checking the data syncs against Klaviyo: nothing recorded to read back."
        );
        assert!(
            sentence.contains("lists.vip.members is keyed by external_id"),
            "{sentence}"
        );
    }
}
