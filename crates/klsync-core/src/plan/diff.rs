//! `diff`: desired + live + managed → [`Plan`]. See the rules in the parent module.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::normalize::{definition_diff, definition_diff_from, normalize_definition};
use super::references::{self, ListTarget};
use super::three_way::{self, Recorded, Verdict};
use super::{
    Action, Change, ChangeKind, FORMAT_VERSION, FieldChange, Plan, PlanError, PlanMeta,
    STATE_ONLY_FIELD, TagLink, cost,
};
use crate::model::{DesiredState, LiveState, ManagedState, ResourceKey, ResourceKind};

/// Plans the changes that make Klaviyo (`live`) match the manifests (`desired`), touching only
/// what klsync manages (`managed`) or adopts.
pub fn diff(
    desired: &DesiredState,
    live: &LiveState,
    managed: &ManagedState,
    meta: PlanMeta,
) -> Result<Plan, PlanError> {
    let mut planner = Planner::new(live, managed);
    planner.tag_groups(desired)?;
    planner.tags(desired)?;
    planner.lists(desired)?;
    planner.segments(desired)?;
    planner.links(desired)?;
    planner.destroys(desired);

    let Planner {
        mut changes,
        mut warnings,
        ..
    } = planner;
    changes.sort_by(|a, b| (order_class(a), &a.address).cmp(&(order_class(b), &b.address)));
    let requests = cost::requests(&changes);
    warnings.extend(cost::daily_cap_warnings(&requests));
    let cost = cost::cost(&changes, &requests);
    Ok(Plan {
        format_version: FORMAT_VERSION,
        meta,
        changes,
        cost,
        warnings,
        data: None,
        scopes: Vec::new(),
        targets: Vec::new(),
    })
}

/// Execution class of a change; see "Order" in the module docs.
fn order_class(change: &Change) -> u8 {
    match (change.action, change.kind) {
        (Action::Detach, _) => 4,
        (Action::Attach, _) => 5,
        (Action::Destroy, ChangeKind::Segment) => 6,
        (Action::Destroy, ChangeKind::List) => 7,
        (Action::Destroy, ChangeKind::Tag) => 8,
        (Action::Destroy, _) => 9,
        (_, ChangeKind::TagGroup) => 0,
        (_, ChangeKind::Tag) => 1,
        (_, ChangeKind::List) => 2,
        (_, _) => 3,
    }
}

/// What a desired resource needs, whichever way it resolves.
struct Proposal {
    /// The desired name.
    name: String,
    /// Fields that differ from the live resource (when there is one).
    fields: Vec<FieldChange>,
    /// Every field, for a create.
    create_fields: Vec<FieldChange>,
    /// The definition diff, for segments.
    definition_diff: Option<String>,
    /// Fingerprint of the live resource (when there is one).
    expected: Option<Value>,
    /// What to record as applied.
    applied: Value,
    /// What a create must wait for.
    depends_on: Vec<String>,
}

impl Proposal {
    /// A proposal without a definition diff that waits for nothing.
    fn new(
        name: &str,
        fields: Vec<FieldChange>,
        create_fields: Vec<FieldChange>,
        expected: Option<Value>,
        applied: Value,
    ) -> Self {
        Proposal {
            name: name.to_owned(),
            fields,
            create_fields,
            definition_diff: None,
            expected,
            applied,
            depends_on: Vec::new(),
        }
    }
}

/// How a desired resource maps onto Klaviyo.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resolution {
    /// Managed, and present in Klaviyo with this id.
    Managed(String),
    /// Unmanaged, and exactly one unmanaged Klaviyo resource has its name.
    Adopted(String),
    /// To be created; `deleted_outside` when klsync managed it and it vanished from Klaviyo.
    Create { deleted_outside: bool },
}

impl Resolution {
    fn live_id(&self) -> Option<&str> {
        match self {
            Resolution::Managed(id) | Resolution::Adopted(id) => Some(id),
            Resolution::Create { .. } => None,
        }
    }
}

struct Planner<'a> {
    live: &'a LiveState,
    managed: &'a ManagedState,
    /// Klaviyo ids klsync manages, per kind: never candidates for adoption.
    managed_ids: BTreeMap<ResourceKind, BTreeSet<&'a str>>,
    /// Ids adopted by this plan, so two manifest resources never adopt the same one.
    claimed: BTreeSet<(ResourceKind, String)>,
    /// Live id of every desired tag group (`None`: created by this plan).
    group_ids: BTreeMap<String, Option<String>>,
    /// Live id of every desired tag (`None`: created or replaced by this plan).
    tag_ids: BTreeMap<String, Option<String>>,
    /// Old ids of replaced tags: Klaviyo drops their links when they are deleted.
    replaced_tag_ids: BTreeSet<String>,
    /// Resolution of every desired list and segment.
    targets: BTreeMap<ResourceKey, Resolution>,
    changes: Vec<Change>,
    warnings: Vec<String>,
}

impl<'a> Planner<'a> {
    fn new(live: &'a LiveState, managed: &'a ManagedState) -> Self {
        let mut managed_ids: BTreeMap<ResourceKind, BTreeSet<&str>> = BTreeMap::new();
        for (key, record) in managed {
            managed_ids
                .entry(key.kind)
                .or_default()
                .insert(record.klaviyo_id.as_str());
        }
        Self {
            live,
            managed,
            managed_ids,
            claimed: BTreeSet::new(),
            group_ids: BTreeMap::new(),
            tag_ids: BTreeMap::new(),
            replaced_tag_ids: BTreeSet::new(),
            targets: BTreeMap::new(),
            changes: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Maps a desired resource onto Klaviyo: its managed record, else an adoption candidate
    /// among `same_name` (live ids of resources with its exact name).
    fn resolve(
        &mut self,
        key: &ResourceKey,
        name: &str,
        same_name: Vec<&str>,
    ) -> Result<Resolution, PlanError> {
        if let Some(record) = self.managed.get(key) {
            return Ok(if self.live.contains(key.kind, &record.klaviyo_id) {
                Resolution::Managed(record.klaviyo_id.clone())
            } else {
                Resolution::Create {
                    deleted_outside: true,
                }
            });
        }
        let managed_ids = self.managed_ids.get(&key.kind);
        let candidates: Vec<&str> = same_name
            .into_iter()
            .filter(|id| !managed_ids.is_some_and(|ids| ids.contains(id)))
            .filter(|id| !self.claimed.contains(&(key.kind, (*id).to_owned())))
            .collect();
        match candidates.as_slice() {
            [] => Ok(Resolution::Create {
                deleted_outside: false,
            }),
            [id] => {
                self.claimed.insert((key.kind, (*id).to_owned()));
                Ok(Resolution::Adopted((*id).to_owned()))
            }
            ids => Err(PlanError::AmbiguousAdoption {
                address: key.address(),
                kind: key.kind,
                name: name.to_owned(),
                ids: ids.iter().map(|id| (*id).to_owned()).collect(),
            }),
        }
    }

    /// Pushes a change of `field` from Klaviyo's value (`live`) to the manifest's (`desired`)
    /// when the three-way rule says Klaviyo must be written: against what klsync sent and what
    /// Klaviyo returned for it, when the record of `key` holds both, else directly.
    fn push_if_needed(
        &self,
        fields: &mut Vec<FieldChange>,
        key: &ResourceKey,
        field: &str,
        live: Value,
        desired: Value,
    ) {
        let recorded = self
            .managed
            .get(key)
            .and_then(|record| Recorded::of(&record.applied, record.returned.as_ref(), field));
        if three_way::compare(&desired, &live, recorded).needs_write() {
            fields.push(FieldChange {
                field: field.to_owned(),
                before: live,
                after: desired,
            });
        }
    }

    fn recorded_prevent_destroy(&self, key: &ResourceKey) -> bool {
        self.managed
            .get(key)
            .and_then(|record| record.applied.get(STATE_ONLY_FIELD))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// Emits the change for a resolved desired resource: create, adopt, update, or nothing.
    fn resource_change(&mut self, key: &ResourceKey, resolution: &Resolution, proposal: Proposal) {
        let Proposal {
            name,
            mut fields,
            create_fields,
            definition_diff,
            expected,
            applied,
            depends_on,
        } = proposal;
        let (action, fields, note) = match resolution {
            Resolution::Create { deleted_outside } => (
                Action::Create,
                create_fields,
                deleted_outside.then(|| "deleted outside klsync; creating it again".to_owned()),
            ),
            Resolution::Adopted(_) => (Action::Adopt, fields, None),
            Resolution::Managed(_) => {
                let desired = applied
                    .get(STATE_ONLY_FIELD)
                    .cloned()
                    .unwrap_or(Value::Bool(false));
                let recorded = Value::Bool(self.recorded_prevent_destroy(key));
                if desired != recorded {
                    fields.push(FieldChange {
                        field: STATE_ONLY_FIELD.to_owned(),
                        before: recorded,
                        after: desired,
                    });
                }
                if fields.is_empty() {
                    return;
                }
                (Action::Update, fields, None)
            }
        };
        self.changes.push(Change {
            address: key.address(),
            kind: key.kind.into(),
            action,
            resource: Some(key.clone()),
            link: None,
            klaviyo_id: resolution.live_id().map(str::to_owned),
            name,
            fields,
            definition_diff,
            prevented: false,
            note,
            expected: resolution.live_id().and(expected),
            applied: Some(applied),
            // Only what this plan creates is ever a dependency, whatever the action.
            depends_on,
        });
    }

    fn tag_groups(&mut self, desired: &DesiredState) -> Result<(), PlanError> {
        for group in desired.tag_groups.values() {
            let key = ResourceKey::new(ResourceKind::TagGroup, &group.name);
            // The default group is Klaviyo's, never klsync's: never adopt it.
            let same_name = self
                .live
                .tag_groups
                .values()
                .filter(|live| !live.default && live.name == group.name)
                .map(|live| live.id.as_str())
                .collect();
            let resolution = self.resolve(&key, &group.name, same_name)?;
            let mut fields = Vec::new();
            let mut expected = None;
            if let Some(id) = resolution.live_id() {
                let live = &self.live.tag_groups[id];
                if live.exclusive != group.exclusive {
                    return Err(PlanError::ExclusiveChanged {
                        group: group.name.clone(),
                        live: live.exclusive,
                        desired: group.exclusive,
                    });
                }
                self.push_if_needed(
                    &mut fields,
                    &key,
                    "name",
                    json!(live.name),
                    json!(group.name),
                );
                expected = Some(json!({"name": live.name, "exclusive": live.exclusive}));
            }
            let create_fields = vec![
                created("name", json!(group.name)),
                created("exclusive", json!(group.exclusive)),
            ];
            let applied = json!({
                "name": group.name,
                "exclusive": group.exclusive,
                "prevent_destroy": group.prevent_destroy,
            });
            self.group_ids
                .insert(group.name.clone(), resolution.live_id().map(str::to_owned));
            self.resource_change(
                &key,
                &resolution,
                Proposal::new(&group.name, fields, create_fields, expected, applied),
            );
        }
        Ok(())
    }

    fn tags(&mut self, desired: &DesiredState) -> Result<(), PlanError> {
        for tag in desired.tags.values() {
            let key = ResourceKey::new(ResourceKind::Tag, &tag.key);
            // The live id of the group the tag must be in; `None` when that group is new.
            let group_id: Option<String> = match &tag.group {
                Some(group) => self.group_ids.get(group).cloned().ok_or_else(|| {
                    PlanError::UnknownTagGroup {
                        tag: tag.key.clone(),
                        group: group.clone(),
                    }
                })?,
                None => Some(
                    self.live
                        .default_tag_group_id()
                        .ok_or_else(|| PlanError::NoDefaultTagGroup {
                            tag: tag.key.clone(),
                        })?
                        .to_owned(),
                ),
            };
            let same_name = self
                .live
                .tags
                .values()
                .filter(|live| live.name == tag.name && Some(&live.group_id) == group_id.as_ref())
                .map(|live| live.id.as_str())
                .collect();
            let resolution = self.resolve(&key, &tag.name, same_name)?;
            let applied = json!({
                "name": tag.name,
                "group": tag.group,
                "prevent_destroy": tag.prevent_destroy,
            });
            let create_fields = vec![
                created("name", json!(tag.name)),
                created("group", json!(tag.group)),
            ];
            let depends_on: Vec<String> = match &tag.group {
                Some(group) if group_id.is_none() => {
                    vec![ResourceKey::new(ResourceKind::TagGroup, group).address()]
                }
                _ => Vec::new(),
            };
            let Some(id) = resolution.live_id() else {
                self.tag_ids.insert(tag.key.clone(), None);
                self.resource_change(
                    &key,
                    &resolution,
                    Proposal {
                        depends_on: depends_on.clone(),
                        ..Proposal::new(&tag.name, Vec::new(), create_fields, None, applied)
                    },
                );
                continue;
            };
            let live = &self.live.tags[id];
            let expected = json!({"name": live.name, "group_id": live.group_id});
            if Some(&live.group_id) != group_id.as_ref() {
                // Klaviyo cannot move a tag between groups: delete it, create it anew.
                let live_group = self.live_group_key(&live.group_id);
                self.replaced_tag_ids.insert(id.to_owned());
                self.tag_ids.insert(tag.key.clone(), None);
                let prevented = self.recorded_prevent_destroy(&key);
                // The new tag takes `name` from the change; fields show what differs.
                let mut fields = Vec::new();
                push_if_differs(&mut fields, "name", json!(live.name), json!(tag.name));
                // Always present: the executor creates the new tag in `after`. Two groups can
                // share a name, so say which one when the names alone look the same.
                let after_group = json!(tag.group);
                let before_group = if live_group == after_group {
                    json!(format!(
                        "{} (id {})",
                        live_group.as_str().unwrap_or("default"),
                        live.group_id
                    ))
                } else {
                    live_group
                };
                fields.push(FieldChange {
                    field: "group".into(),
                    before: before_group,
                    after: after_group,
                });
                self.changes.push(Change {
                    address: key.address(),
                    kind: ChangeKind::Tag,
                    action: Action::Replace,
                    resource: Some(key.clone()),
                    link: None,
                    klaviyo_id: Some(id.to_owned()),
                    name: tag.name.clone(),
                    fields,
                    definition_diff: None,
                    prevented,
                    note: Some(if prevented {
                        "a tag cannot move between tag groups, and prevent_destroy forbids deleting it".to_owned()
                    } else {
                        "a tag cannot move between tag groups: it is deleted (with its links) and created in the new group".to_owned()
                    }),
                    expected: Some(expected),
                    applied: Some(applied),
                    depends_on,
                });
                continue;
            }
            self.tag_ids.insert(tag.key.clone(), Some(id.to_owned()));
            let mut fields = Vec::new();
            self.push_if_needed(&mut fields, &key, "name", json!(live.name), json!(tag.name));
            self.resource_change(
                &key,
                &resolution,
                Proposal::new(&tag.name, fields, create_fields, Some(expected), applied),
            );
        }
        Ok(())
    }

    /// A live group as the `group` field spells it: its name, or `null` for the default group.
    fn live_group_key(&self, group_id: &str) -> Value {
        match self.live.tag_groups.get(group_id) {
            Some(group) if !group.default => json!(group.name),
            Some(_) => Value::Null,
            None => json!(group_id),
        }
    }

    fn lists(&mut self, desired: &DesiredState) -> Result<(), PlanError> {
        for list in desired.lists.values() {
            let key = ResourceKey::new(ResourceKind::List, &list.key);
            let same_name = self
                .live
                .lists
                .values()
                .filter(|live| live.name == list.name)
                .map(|live| live.id.as_str())
                .collect();
            let resolution = self.resolve(&key, &list.name, same_name)?;
            let mut fields = Vec::new();
            let mut expected = None;
            if let Some(id) = resolution.live_id() {
                let live = &self.live.lists[id];
                self.push_if_needed(
                    &mut fields,
                    &key,
                    "name",
                    json!(live.name),
                    json!(list.name),
                );
                // No desired opt-in process means "leave Klaviyo's value alone".
                if let Some(opt_in) = list.opt_in_process {
                    self.push_if_needed(
                        &mut fields,
                        &key,
                        "opt_in_process",
                        json!(live.opt_in_process),
                        json!(opt_in),
                    );
                }
                expected = Some(json!({"name": live.name, "opt_in_process": live.opt_in_process}));
            }
            let mut create_fields = vec![created("name", json!(list.name))];
            if let Some(opt_in) = list.opt_in_process {
                create_fields.push(created("opt_in_process", json!(opt_in)));
            }
            let linked = resolution.live_id().map(|id| &self.live.lists[id].tag_ids);
            let applied = json!({
                "name": list.name,
                "opt_in_process": list.opt_in_process,
                "prevent_destroy": list.prevent_destroy,
                "tags": self.applied_tags(linked),
            });
            self.targets.insert(key.clone(), resolution.clone());
            self.resource_change(
                &key,
                &resolution,
                Proposal::new(&list.name, fields, create_fields, expected, applied),
            );
        }
        Ok(())
    }

    fn segments(&mut self, desired: &DesiredState) -> Result<(), PlanError> {
        for segment in desired.segments.values() {
            let key = ResourceKey::new(ResourceKind::Segment, &segment.key);
            let same_name = self
                .live
                .segments
                .values()
                .filter(|live| live.name == segment.name)
                .map(|live| live.id.as_str())
                .collect();
            let resolution = self.resolve(&key, &segment.name, same_name)?;
            // Lists named by manifest id: their Klaviyo ids, or placeholders for lists this
            // plan creates (see `references`).
            let (definition, waits_for) =
                references::resolve_for_plan(&segment.definition, |list| {
                    desired.lists.contains_key(list).then(|| {
                        match self
                            .targets
                            .get(&ResourceKey::new(ResourceKind::List, list))
                            .and_then(Resolution::live_id)
                        {
                            Some(id) => ListTarget::Exists(id.to_owned()),
                            None => ListTarget::Created,
                        }
                    })
                });
            let wanted = normalize_definition(&definition);
            let mut fields = Vec::new();
            let mut expected = None;
            let mut diff_text = None;
            if let Some(id) = resolution.live_id() {
                let live = &self.live.segments[id];
                self.push_if_needed(
                    &mut fields,
                    &key,
                    "name",
                    json!(live.name),
                    json!(segment.name),
                );
                let current = normalize_definition(&live.definition);
                self.push_if_needed(
                    &mut fields,
                    &key,
                    "definition",
                    current.clone(),
                    wanted.clone(),
                );
                if fields.iter().any(|field| field.field == "definition") {
                    // A manifest change while Klaviyo holds what it returned for the last write:
                    // shown against what klsync sent then, so Klaviyo's own spelling of the
                    // rest (`500.0` for `500`, added defaults) does not show as changes. An
                    // edit in Klaviyo is shown against Klaviyo's value, which apply replaces.
                    let recorded = self.managed.get(&key).and_then(|record| {
                        Recorded::of(&record.applied, record.returned.as_ref(), "definition")
                    });
                    diff_text = Some(match recorded {
                        Some(pair)
                            if three_way::compare(&wanted, &current, Some(pair))
                                == Verdict::ManifestChanged =>
                        {
                            definition_diff_from("last applied", Some(pair.sent), &definition)
                        }
                        _ => definition_diff(Some(&live.definition), &definition),
                    });
                }
                self.push_if_needed(
                    &mut fields,
                    &key,
                    "is_starred",
                    json!(live.is_starred),
                    json!(segment.is_starred),
                );
                expected = Some(json!({
                    "name": live.name,
                    "definition": current,
                    "is_starred": live.is_starred,
                }));
            } else {
                diff_text = Some(definition_diff(None, &definition));
            }
            let create_fields = vec![
                created("name", json!(segment.name)),
                created("definition", definition.clone()),
                created("is_starred", json!(segment.is_starred)),
            ];
            let linked = resolution
                .live_id()
                .map(|id| &self.live.segments[id].tag_ids);
            let applied = json!({
                "name": segment.name,
                "definition": wanted,
                "is_starred": segment.is_starred,
                "prevent_destroy": segment.prevent_destroy,
                "tags": self.applied_tags(linked),
            });
            self.targets.insert(key.clone(), resolution.clone());
            self.resource_change(
                &key,
                &resolution,
                Proposal {
                    definition_diff: diff_text,
                    depends_on: waits_for,
                    ..Proposal::new(&segment.name, fields, create_fields, expected, applied)
                },
            );
        }
        Ok(())
    }

    /// Klaviyo id → key of every tag klsync manages or adopts in this plan (known once
    /// [`Self::tags`] ran).
    fn klsync_tags(&self) -> BTreeMap<String, String> {
        let mut klsync_tags: BTreeMap<String, String> = self
            .managed
            .iter()
            .filter(|(key, _)| key.kind == ResourceKind::Tag)
            .map(|(key, record)| (record.klaviyo_id.clone(), key.key.clone()))
            .collect();
        for (key, id) in &self.tag_ids {
            if let Some(id) = id {
                klsync_tags.insert(id.clone(), key.clone());
            }
        }
        klsync_tags
    }

    /// The `tags` a list's or segment's `applied` value records: its links to klsync's tags as
    /// they stand when its own change runs. Links come after resources, so a new list has none
    /// yet and a replaced tag's links are gone; each attach and detach then updates the record
    /// (see `apply::executor`).
    /// `linked` is the live resource's links, `None` when it is created.
    fn applied_tags(&self, linked: Option<&BTreeSet<String>>) -> Value {
        let Some(linked) = linked else {
            return json!([]);
        };
        let klsync_tags = self.klsync_tags();
        let keys: BTreeSet<&String> = linked
            .iter()
            .filter(|id| !self.replaced_tag_ids.contains(*id))
            .filter_map(|id| klsync_tags.get(id))
            .collect();
        json!(keys)
    }

    /// Attaches desired tags missing in Klaviyo and detaches klsync's tags no longer desired.
    /// Links to tags klsync does not manage are left alone.
    fn links(&mut self, desired: &DesiredState) -> Result<(), PlanError> {
        let klsync_tags = self.klsync_tags();
        let targets = desired
            .lists
            .values()
            .map(|list| (ResourceKind::List, &list.key, &list.name, &list.tags))
            .chain(desired.segments.values().map(|segment| {
                (
                    ResourceKind::Segment,
                    &segment.key,
                    &segment.name,
                    &segment.tags,
                )
            }));
        let mut links = Vec::new();
        for (kind, key, name, tags) in targets {
            let target = ResourceKey::new(kind, key);
            let target_id = self.targets[&target].live_id().map(str::to_owned);
            let empty = BTreeSet::new();
            let linked = match (&target_id, kind) {
                (Some(id), ResourceKind::List) => &self.live.lists[id].tag_ids,
                (Some(id), _) => &self.live.segments[id].tag_ids,
                (None, _) => &empty,
            };
            let mut wanted_ids = BTreeSet::new();
            for tag in tags {
                let tag_id = self
                    .tag_ids
                    .get(tag)
                    .ok_or_else(|| PlanError::UnknownTag {
                        address: target.address(),
                        tag: tag.clone(),
                    })?
                    .clone();
                if let Some(id) = &tag_id {
                    wanted_ids.insert(id.clone());
                    if linked.contains(id) {
                        continue;
                    }
                }
                links.push(link_change(
                    Action::Attach,
                    tag,
                    tag_id,
                    &target,
                    target_id.clone(),
                    name,
                ));
            }
            for id in linked {
                let Some(tag) = klsync_tags.get(id) else {
                    continue;
                };
                if wanted_ids.contains(id) || self.replaced_tag_ids.contains(id) {
                    continue;
                }
                links.push(link_change(
                    Action::Detach,
                    tag,
                    Some(id.clone()),
                    &target,
                    target_id.clone(),
                    name,
                ));
            }
        }
        self.changes.extend(links);
        Ok(())
    }

    /// Destroys managed resources the manifests no longer declare.
    fn destroys(&mut self, desired: &DesiredState) {
        let managed_tag_ids: BTreeSet<&str> = self
            .managed
            .iter()
            .filter(|(key, _)| key.kind == ResourceKind::Tag)
            .map(|(_, record)| record.klaviyo_id.as_str())
            .collect();
        for (key, record) in self.managed {
            let declared = match key.kind {
                ResourceKind::TagGroup => desired.tag_groups.contains_key(&key.key),
                ResourceKind::Tag => desired.tags.contains_key(&key.key),
                ResourceKind::List => desired.lists.contains_key(&key.key),
                ResourceKind::Segment => desired.segments.contains_key(&key.key),
            };
            if declared {
                continue;
            }
            let id = record.klaviyo_id.as_str();
            let Some((name, expected)) = fingerprint(self.live, key.kind, id) else {
                self.warnings.push(format!(
                    "{} ({id}) is recorded as managed but no longer exists in Klaviyo; nothing to destroy",
                    key.address()
                ));
                continue;
            };
            let mut prevented = self.recorded_prevent_destroy(key);
            let mut note = prevented.then(|| prevented_destroy_note(key.kind));
            let mut depends_on = Vec::new();
            if key.kind == ResourceKind::TagGroup {
                // Klaviyo deletes a group's tags with it: refuse if any is not klsync's.
                let mut unmanaged: Vec<&str> = Vec::new();
                for tag in self.live.tags.values().filter(|tag| tag.group_id == id) {
                    if managed_tag_ids.contains(tag.id.as_str()) {
                        if let Some((tag_key, _)) = self
                            .managed
                            .iter()
                            .find(|(k, r)| k.kind == ResourceKind::Tag && r.klaviyo_id == tag.id)
                        {
                            depends_on.push(tag_key.address());
                        }
                    } else {
                        unmanaged.push(&tag.name);
                    }
                }
                if self.live.tag_groups[id].default {
                    prevented = true;
                    note = Some("Klaviyo's default tag group cannot be deleted".to_owned());
                } else if !unmanaged.is_empty() {
                    prevented = true;
                    note = Some(format!(
                        "deleting the group would delete tags klsync does not manage: {}",
                        unmanaged.join(", ")
                    ));
                }
                depends_on.sort();
            }
            self.changes.push(Change {
                address: key.address(),
                kind: key.kind.into(),
                action: Action::Destroy,
                resource: Some(key.clone()),
                link: None,
                klaviyo_id: Some(id.to_owned()),
                name,
                fields: Vec::new(),
                definition_diff: None,
                prevented,
                note,
                expected: Some(expected),
                applied: None,
                depends_on,
            });
        }
    }
}

/// Why a destroy is prevented, and how to lift it. The flag is the one last applied, so taking
/// the resource out of the manifests does not lift it: it must be applied as `false` first.
fn prevented_destroy_note(kind: ResourceKind) -> String {
    if kind == ResourceKind::Tag {
        "prevent_destroy of its tag group (as last applied) forbids destroying it, also now that it is gone from the manifests; to delete it, declare the group with `prevent_destroy: false` and the tag in it, apply, then remove the tag".to_owned()
    } else {
        "prevent_destroy (as last applied) forbids destroying it, also now that it is gone from the manifests; to delete it, declare it again with `prevent_destroy: false`, apply, then remove it".to_owned()
    }
}

fn link_change(
    action: Action,
    tag: &str,
    tag_id: Option<String>,
    target: &ResourceKey,
    target_id: Option<String>,
    name: &str,
) -> Change {
    let mut depends_on = Vec::new();
    if tag_id.is_none() {
        depends_on.push(ResourceKey::new(ResourceKind::Tag, tag).address());
    }
    if target_id.is_none() {
        depends_on.push(target.address());
    }
    let expected = match (&tag_id, &target_id) {
        (Some(_), Some(_)) => Some(json!({"linked": action == Action::Detach})),
        _ => None,
    };
    Change {
        address: format!("tag_link.{tag}->{}", target.address()),
        kind: ChangeKind::TagLink,
        action,
        resource: None,
        link: Some(TagLink {
            tag: tag.to_owned(),
            tag_id,
            target: target.clone(),
            target_id,
        }),
        klaviyo_id: None,
        name: name.to_owned(),
        fields: Vec::new(),
        definition_diff: None,
        prevented: false,
        note: None,
        expected,
        applied: None,
        depends_on,
    }
}

/// The fields klsync compares of a live resource (what a plan's `expected` holds, and what the
/// state records as Klaviyo's answer to a write), or `None` when it does not exist.
pub fn live_fields(live: &LiveState, kind: ResourceKind, id: &str) -> Option<Value> {
    fingerprint(live, kind, id).map(|(_, fields)| fields)
}

/// The name and comparable attributes of a live resource, or `None` when it does not exist.
fn fingerprint(live: &LiveState, kind: ResourceKind, id: &str) -> Option<(String, Value)> {
    match kind {
        ResourceKind::TagGroup => live.tag_groups.get(id).map(|group| {
            (
                group.name.clone(),
                json!({"name": group.name, "exclusive": group.exclusive}),
            )
        }),
        ResourceKind::Tag => live.tags.get(id).map(|tag| {
            (
                tag.name.clone(),
                json!({"name": tag.name, "group_id": tag.group_id}),
            )
        }),
        ResourceKind::List => live.lists.get(id).map(|list| {
            (
                list.name.clone(),
                json!({"name": list.name, "opt_in_process": list.opt_in_process}),
            )
        }),
        ResourceKind::Segment => live.segments.get(id).map(|segment| {
            (
                segment.name.clone(),
                json!({
                    "name": segment.name,
                    "definition": normalize_definition(&segment.definition),
                    "is_starred": segment.is_starred,
                }),
            )
        }),
    }
}

fn created(field: &str, after: Value) -> FieldChange {
    FieldChange {
        field: field.to_owned(),
        before: Value::Null,
        after,
    }
}

fn push_if_differs(fields: &mut Vec<FieldChange>, field: &str, before: Value, after: Value) {
    if before != after {
        fields.push(FieldChange {
            field: field.to_owned(),
            before,
            after,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_proposal_has_no_definition_diff_and_waits_for_nothing() {
        let proposal = Proposal::new(
            "VIP",
            Vec::new(),
            vec![created("name", json!("VIP"))],
            None,
            json!({"name": "VIP"}),
        );
        assert_eq!(proposal.name, "VIP");
        assert_eq!(proposal.create_fields.len(), 1);
        assert!(proposal.definition_diff.is_none() && proposal.depends_on.is_empty());
    }
}
