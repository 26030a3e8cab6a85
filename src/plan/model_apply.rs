//! A plan applied to an in-memory model of Klaviyo, the way the executor applies it to the real
//! one: creates get fresh ids, links are added and removed, destroys take their links (and a
//! group's tags) with them, and klsync's state records each change's `applied` value; attaches
//! and detaches update the `tags` of their list's or segment's record, and a deleted tag leaves
//! every record's `tags`.
//!
//! Prevented changes are skipped, and so is every change that depends on a skipped one, as the
//! executor would if it were allowed to run at all.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Action, Change, FieldChange, record_link};
use crate::manifest::OptInProcess;
use crate::model::{
    LiveList, LiveSegment, LiveState, LiveTag, LiveTagGroup, ManagedRecord, ManagedState,
    ResourceKey, ResourceKind,
};

/// Applies `plan` to `live` and `managed`, taking new Klaviyo ids from `ids`. Returns the
/// addresses of the changes it skipped (prevented, or depending on a skipped change).
pub fn model_apply(
    plan: &super::Plan,
    live: &mut LiveState,
    managed: &mut ManagedState,
    ids: &mut impl FnMut(ResourceKind) -> String,
) -> BTreeSet<String> {
    let mut skipped = BTreeSet::new();
    for change in &plan.changes {
        let blocked = change
            .depends_on
            .iter()
            .any(|address| skipped.contains(address));
        if change.prevented || blocked {
            skipped.insert(change.address.clone());
            continue;
        }
        apply_change(change, live, managed, ids);
    }
    skipped
}

fn apply_change(
    change: &Change,
    live: &mut LiveState,
    managed: &mut ManagedState,
    ids: &mut impl FnMut(ResourceKind) -> String,
) {
    if let Some(link) = &change.link {
        let tag_id = link
            .tag_id
            .clone()
            .or_else(|| managed_id(managed, &ResourceKey::new(ResourceKind::Tag, &link.tag)));
        let target_id = link
            .target_id
            .clone()
            .or_else(|| managed_id(managed, &link.target));
        let (Some(tag_id), Some(target_id)) = (tag_id, target_id) else {
            return;
        };
        let attach = change.action == Action::Attach;
        if let Some(tag_ids) = target_tags(live, link.target.kind, &target_id) {
            if attach {
                tag_ids.insert(tag_id);
            } else {
                tag_ids.remove(&tag_id);
            }
        }
        if let Some(record) = managed.get_mut(&link.target) {
            record_link(&mut record.applied, &link.tag, attach);
        }
        return;
    }
    let Some(key) = &change.resource else {
        return;
    };
    let applied = change.applied.clone().unwrap_or(Value::Null);
    match change.action {
        Action::Create => {
            let id = ids(key.kind);
            create(live, managed, key.kind, &id, change);
            let returned = super::live_fields(live, key.kind, &id);
            managed.insert(
                key.clone(),
                ManagedRecord {
                    klaviyo_id: id,
                    applied,
                    returned,
                },
            );
        }
        Action::Update | Action::Adopt => {
            let Some(id) = change
                .klaviyo_id
                .clone()
                .or_else(|| managed_id(managed, key))
            else {
                return;
            };
            for field in &change.fields {
                set_field(live, key.kind, &id, field);
            }
            let returned = super::live_fields(live, key.kind, &id);
            managed.insert(
                key.clone(),
                ManagedRecord {
                    klaviyo_id: id,
                    applied,
                    returned,
                },
            );
        }
        Action::Destroy => {
            if let Some(id) = &change.klaviyo_id {
                delete(live, key.kind, id);
            }
            managed.remove(key);
            unlink_everywhere(managed, key);
        }
        Action::Replace => {
            if let Some(id) = &change.klaviyo_id {
                delete(live, key.kind, id);
            }
            unlink_everywhere(managed, key);
            let id = ids(key.kind);
            create(live, managed, key.kind, &id, change);
            let returned = super::live_fields(live, key.kind, &id);
            managed.insert(
                key.clone(),
                ManagedRecord {
                    klaviyo_id: id,
                    applied,
                    returned,
                },
            );
        }
        Action::Attach | Action::Detach => {}
    }
}

/// A deleted tag takes its links along: no record keeps it (a group's tags go with their own
/// changes, which the plan orders before the group's).
fn unlink_everywhere(managed: &mut ManagedState, key: &ResourceKey) {
    if key.kind != ResourceKind::Tag {
        return;
    }
    for record in managed.values_mut() {
        record_link(&mut record.applied, &key.key, false);
    }
}

fn managed_id(managed: &ManagedState, key: &ResourceKey) -> Option<String> {
    managed.get(key).map(|record| record.klaviyo_id.clone())
}

fn after<'c>(change: &'c Change, field: &str) -> Option<&'c Value> {
    change
        .fields
        .iter()
        .find(|candidate| candidate.field == field)
        .map(|candidate| &candidate.after)
}

fn text(value: Option<&Value>) -> String {
    value.and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn opt_in(value: Option<&Value>) -> Option<OptInProcess> {
    value.and_then(|value| serde_json::from_value(value.clone()).ok())
}

fn create(
    live: &mut LiveState,
    managed: &ManagedState,
    kind: ResourceKind,
    id: &str,
    change: &Change,
) {
    let name = change.name.clone();
    let id = id.to_owned();
    match kind {
        ResourceKind::TagGroup => {
            let exclusive = after(change, "exclusive")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            live.tag_groups.insert(
                id.clone(),
                LiveTagGroup {
                    id,
                    name,
                    exclusive,
                    default: false,
                },
            );
        }
        ResourceKind::Tag => {
            // Klaviyo puts a tag created without a group into the default group.
            let group_id = match after(change, "group").and_then(Value::as_str) {
                Some(group) => {
                    managed_id(managed, &ResourceKey::new(ResourceKind::TagGroup, group))
                }
                None => live.default_tag_group_id().map(str::to_owned),
            }
            .unwrap_or_default();
            live.tags.insert(id.clone(), LiveTag { id, name, group_id });
        }
        ResourceKind::List => {
            live.lists.insert(
                id.clone(),
                LiveList {
                    id,
                    name,
                    opt_in_process: opt_in(after(change, "opt_in_process")),
                    tag_ids: BTreeSet::new(),
                },
            );
        }
        ResourceKind::Segment => {
            live.segments.insert(
                id.clone(),
                LiveSegment {
                    id,
                    name,
                    definition: after(change, "definition").cloned().unwrap_or(Value::Null),
                    is_starred: after(change, "is_starred")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    tag_ids: BTreeSet::new(),
                },
            );
        }
    }
}

fn set_field(live: &mut LiveState, kind: ResourceKind, id: &str, field: &FieldChange) {
    let value = &field.after;
    match (kind, field.field.as_str()) {
        (ResourceKind::TagGroup, "name") => {
            if let Some(group) = live.tag_groups.get_mut(id) {
                group.name = text(Some(value));
            }
        }
        (ResourceKind::Tag, "name") => {
            if let Some(tag) = live.tags.get_mut(id) {
                tag.name = text(Some(value));
            }
        }
        (ResourceKind::List, "name") => {
            if let Some(list) = live.lists.get_mut(id) {
                list.name = text(Some(value));
            }
        }
        (ResourceKind::List, "opt_in_process") => {
            if let Some(list) = live.lists.get_mut(id) {
                list.opt_in_process = opt_in(Some(value));
            }
        }
        (ResourceKind::Segment, "name") => {
            if let Some(segment) = live.segments.get_mut(id) {
                segment.name = text(Some(value));
            }
        }
        (ResourceKind::Segment, "definition") => {
            if let Some(segment) = live.segments.get_mut(id) {
                segment.definition = value.clone();
            }
        }
        (ResourceKind::Segment, "is_starred") => {
            if let Some(segment) = live.segments.get_mut(id) {
                segment.is_starred = value.as_bool().unwrap_or(false);
            }
        }
        // `prevent_destroy` lives in klsync's state only.
        _ => {}
    }
}

fn target_tags<'l>(
    live: &'l mut LiveState,
    kind: ResourceKind,
    id: &str,
) -> Option<&'l mut BTreeSet<String>> {
    match kind {
        ResourceKind::List => live.lists.get_mut(id).map(|list| &mut list.tag_ids),
        ResourceKind::Segment => live
            .segments
            .get_mut(id)
            .map(|segment| &mut segment.tag_ids),
        ResourceKind::TagGroup | ResourceKind::Tag => None,
    }
}

/// Deletes like Klaviyo: a tag takes its links along, a group takes its tags along.
fn delete(live: &mut LiveState, kind: ResourceKind, id: &str) {
    match kind {
        ResourceKind::TagGroup => {
            live.tag_groups.remove(id);
            let tags: Vec<String> = live
                .tags
                .values()
                .filter(|tag| tag.group_id == id)
                .map(|tag| tag.id.clone())
                .collect();
            for tag in tags {
                delete(live, ResourceKind::Tag, &tag);
            }
        }
        ResourceKind::Tag => {
            live.tags.remove(id);
            for list in live.lists.values_mut() {
                list.tag_ids.remove(id);
            }
            for segment in live.segments.values_mut() {
                segment.tag_ids.remove(id);
            }
        }
        ResourceKind::List => {
            live.lists.remove(id);
        }
        ResourceKind::Segment => {
            live.segments.remove(id);
        }
    }
}
