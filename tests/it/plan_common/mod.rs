//! Builders for desired, live and managed states shared by the plan tests.
#![allow(dead_code)]

use std::collections::BTreeSet;

use klsync::manifest::OptInProcess;
use klsync::model::{
    DesiredList, DesiredSegment, DesiredState, DesiredTag, DesiredTagGroup, LiveList, LiveSegment,
    LiveState, LiveTag, LiveTagGroup, ManagedRecord, ManagedState, ResourceKey, ResourceKind,
    tag_key,
};
use klsync::plan::PlanMeta;
use serde_json::{Value, json};

pub const DEFAULT_GROUP: &str = "tg-default";

pub fn meta() -> PlanMeta {
    PlanMeta {
        created_at: "2026-11-28T00:00:00Z".into(),
        manifest_digest: "sha256:0123abcd".into(),
        klsync_version: "0.1.0".into(),
    }
}

/// A Klaviyo account with only its default tag group.
pub fn live() -> LiveState {
    let mut live = LiveState::default();
    live_group(&mut live, DEFAULT_GROUP, "Default Tag Group", false);
    live.tag_groups.get_mut(DEFAULT_GROUP).unwrap().default = true;
    live
}

pub fn live_group(live: &mut LiveState, id: &str, name: &str, exclusive: bool) {
    live.tag_groups.insert(
        id.into(),
        LiveTagGroup {
            id: id.into(),
            name: name.into(),
            exclusive,
            default: false,
        },
    );
}

pub fn live_tag(live: &mut LiveState, id: &str, name: &str, group_id: &str) {
    live.tags.insert(
        id.into(),
        LiveTag {
            id: id.into(),
            name: name.into(),
            group_id: group_id.into(),
        },
    );
}

pub fn live_list(
    live: &mut LiveState,
    id: &str,
    name: &str,
    opt_in_process: Option<OptInProcess>,
    tag_ids: &[&str],
) {
    live.lists.insert(
        id.into(),
        LiveList {
            id: id.into(),
            name: name.into(),
            opt_in_process,
            tag_ids: tag_ids.iter().map(|id| (*id).to_owned()).collect(),
        },
    );
}

pub fn live_segment(live: &mut LiveState, id: &str, name: &str, definition: Value, tags: &[&str]) {
    live.segments.insert(
        id.into(),
        LiveSegment {
            id: id.into(),
            name: name.into(),
            definition,
            is_starred: false,
            tag_ids: tags.iter().map(|id| (*id).to_owned()).collect(),
        },
    );
}

pub fn manage(
    managed: &mut ManagedState,
    kind: ResourceKind,
    key: &str,
    id: &str,
    prevent_destroy: bool,
) {
    managed.insert(
        ResourceKey::new(kind, key),
        ManagedRecord {
            klaviyo_id: id.into(),
            applied: json!({"prevent_destroy": prevent_destroy}),
            returned: None,
        },
    );
}

pub fn want_group(desired: &mut DesiredState, name: &str, exclusive: bool) {
    desired.tag_groups.insert(
        name.into(),
        DesiredTagGroup {
            name: name.into(),
            exclusive,
            prevent_destroy: false,
        },
    );
}

pub fn want_tag(desired: &mut DesiredState, group: Option<&str>, name: &str) {
    let key = tag_key(group, name);
    desired.tags.insert(
        key.clone(),
        DesiredTag {
            key,
            group: group.map(str::to_owned),
            name: name.into(),
            prevent_destroy: false,
        },
    );
}

pub fn want_list(
    desired: &mut DesiredState,
    key: &str,
    name: &str,
    opt_in_process: Option<OptInProcess>,
    tags: &[&str],
) {
    desired.lists.insert(
        key.into(),
        DesiredList {
            key: key.into(),
            name: name.into(),
            opt_in_process,
            tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
            prevent_destroy: false,
        },
    );
}

pub fn want_segment(
    desired: &mut DesiredState,
    key: &str,
    name: &str,
    definition: Value,
    tags: &[&str],
) {
    desired.segments.insert(
        key.into(),
        DesiredSegment {
            key: key.into(),
            name: name.into(),
            definition,
            is_starred: false,
            tags: tags
                .iter()
                .map(|tag| (*tag).to_owned())
                .collect::<BTreeSet<_>>(),
            prevent_destroy: false,
        },
    );
}

pub fn membership(list_id: &str) -> Value {
    json!({"condition_groups": [{"conditions": [
        {"type": "profile-group-membership", "is_member": true, "group_ids": [list_id]}
    ]}]})
}

pub fn email_contains(value: &str) -> Value {
    json!({"condition_groups": [{"conditions": [
        {"type": "profile-property", "property": "email",
         "filter": {"type": "string", "operator": "contains", "value": value}}
    ]}]})
}

/// A scenario whose plan has every kind of change: create, update (name and definition),
/// adopt, destroy, prevented destroy, replace, attach and detach.
pub fn every_kind() -> (DesiredState, LiveState, ManagedState) {
    let mut live = live();
    let mut managed = ManagedState::new();
    let mut desired = DesiredState::default();

    // Tag groups: `lifecycle` is managed and unchanged; `channel` is new.
    live_group(&mut live, "tg-life", "lifecycle", false);
    manage(
        &mut managed,
        ResourceKind::TagGroup,
        "lifecycle",
        "tg-life",
        false,
    );
    want_group(&mut desired, "lifecycle", false);
    want_group(&mut desired, "channel", true);

    // Tags.
    live_tag(&mut live, "t-vip", "vip", "tg-life");
    manage(
        &mut managed,
        ResourceKind::Tag,
        "lifecycle/vip",
        "t-vip",
        false,
    );
    want_tag(&mut desired, Some("lifecycle"), "vip");
    want_tag(&mut desired, Some("channel"), "email");
    // `newsletter` should be in the default group but sits in `lifecycle`: replace.
    live_tag(&mut live, "t-news", "newsletter", "tg-life");
    manage(
        &mut managed,
        ResourceKind::Tag,
        "newsletter",
        "t-news",
        false,
    );
    want_tag(&mut desired, None, "newsletter");
    // `promo` exists unmanaged in the default group: adopt.
    live_tag(&mut live, "t-promo", "promo", DEFAULT_GROUP);
    want_tag(&mut desired, None, "promo");
    // `lifecycle/old` is managed but gone from the manifests: destroy (and detach).
    live_tag(&mut live, "t-old", "old", "tg-life");
    manage(
        &mut managed,
        ResourceKind::Tag,
        "lifecycle/old",
        "t-old",
        false,
    );
    // An unmanaged tag on a managed list: never touched.
    live_tag(&mut live, "t-legacy", "legacy", DEFAULT_GROUP);

    // Lists.
    live_list(
        &mut live,
        "L-vip",
        "VIP",
        Some(OptInProcess::SingleOptIn),
        &["t-vip", "t-old", "t-legacy"],
    );
    manage(&mut managed, ResourceKind::List, "vip", "L-vip", false);
    want_list(
        &mut desired,
        "vip",
        "VIP customers",
        Some(OptInProcess::DoubleOptIn),
        &["lifecycle/vip", "promo"],
    );
    want_list(
        &mut desired,
        "newsletter",
        "Newsletter",
        Some(OptInProcess::SingleOptIn),
        &["newsletter", "channel/email"],
    );
    live_list(&mut live, "L-imp", "Imported leads", None, &[]);
    want_list(&mut desired, "imported", "Imported leads", None, &[]);
    live_list(&mut live, "L-gone", "Spring 2024", None, &[]);
    manage(
        &mut managed,
        ResourceKind::List,
        "spring-2024",
        "L-gone",
        false,
    );

    // Segments.
    let mut klaviyo_definition = email_contains("@example.com");
    // Klaviyo's spelling of an absent optional field is not a change.
    klaviyo_definition["condition_groups"][0]["conditions"][0]["timeframe_filter"] = Value::Null;
    live_segment(
        &mut live,
        "S-eng",
        "Engaged",
        klaviyo_definition.clone(),
        &[],
    );
    manage(
        &mut managed,
        ResourceKind::Segment,
        "engaged",
        "S-eng",
        false,
    );
    want_segment(
        &mut desired,
        "engaged",
        "Engaged",
        email_contains("@example.org"),
        &[],
    );
    want_segment(
        &mut desired,
        "vip-members",
        "VIP members",
        membership("L-vip"),
        &["lifecycle/vip"],
    );
    live_segment(
        &mut live,
        "S-keep",
        "Board members",
        membership("L-vip"),
        &[],
    );
    manage(&mut managed, ResourceKind::Segment, "board", "S-keep", true);

    (desired, live, managed)
}
