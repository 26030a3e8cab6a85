//! The diff rules, one scenario each.

use crate::plan_common::*;
use klsync::manifest::OptInProcess;
use klsync::model::{DesiredState, ManagedState, ResourceKind};
use klsync::plan::{Action, Plan, PlanError, diff};
use serde_json::json;

fn plan(desired: &DesiredState, live: &klsync::model::LiveState, managed: &ManagedState) -> Plan {
    diff(desired, live, managed, meta()).expect("plan")
}

fn actions(plan: &Plan) -> Vec<(String, Action, bool)> {
    plan.changes
        .iter()
        .map(|change| (change.address.clone(), change.action, change.prevented))
        .collect()
}

#[test]
fn an_unmanaged_resource_with_the_exact_name_is_adopted_and_updated() {
    let mut live = live();
    live_list(&mut live, "L1", "VIP", Some(OptInProcess::SingleOptIn), &[]);
    live_list(&mut live, "L2", "vip", None, &[]);
    let mut desired = DesiredState::default();
    want_list(
        &mut desired,
        "vip",
        "VIP",
        Some(OptInProcess::DoubleOptIn),
        &[],
    );
    let plan = plan(&desired, &live, &ManagedState::new());
    assert_eq!(actions(&plan), [("list.vip".into(), Action::Adopt, false)]);
    let change = &plan.changes[0];
    assert_eq!(change.klaviyo_id.as_deref(), Some("L1"));
    assert_eq!(change.fields.len(), 1);
    assert_eq!(change.fields[0].field, "opt_in_process");
    assert_eq!(plan.cost.requests.get("update_list"), Some(&1));
}

#[test]
fn adoption_is_refused_when_several_unmanaged_resources_match() {
    let mut live = live();
    live_list(&mut live, "L1", "VIP", None, &[]);
    live_list(&mut live, "L2", "VIP", None, &[]);
    let mut desired = DesiredState::default();
    want_list(&mut desired, "vip", "VIP", None, &[]);
    let error = diff(&desired, &live, &ManagedState::new(), meta()).unwrap_err();
    assert_eq!(
        error,
        PlanError::AmbiguousAdoption {
            address: "list.vip".into(),
            kind: ResourceKind::List,
            name: "VIP".into(),
            ids: vec!["L1".into(), "L2".into()],
        }
    );
    let message = error.to_string();
    assert!(message.contains("L1, L2"), "{message}");
}

#[test]
fn a_managed_resource_is_never_an_adoption_candidate() {
    let mut live = live();
    live_list(&mut live, "L1", "VIP", None, &[]);
    live_list(&mut live, "L2", "VIP", None, &[]);
    let mut managed = ManagedState::new();
    manage(&mut managed, ResourceKind::List, "other", "L2", false);
    let mut desired = DesiredState::default();
    want_list(&mut desired, "vip", "VIP", None, &[]);
    want_list(&mut desired, "other", "VIP", None, &[]);
    let plan = plan(&desired, &live, &managed);
    assert_eq!(actions(&plan), [("list.vip".into(), Action::Adopt, false)]);
    assert_eq!(plan.changes[0].klaviyo_id.as_deref(), Some("L1"));
}

#[test]
fn one_live_resource_is_adopted_once() {
    let mut live = live();
    live_list(&mut live, "L1", "VIP", None, &[]);
    let mut desired = DesiredState::default();
    want_list(&mut desired, "a", "VIP", None, &[]);
    want_list(&mut desired, "b", "VIP", None, &[]);
    let plan = plan(&desired, &live, &ManagedState::new());
    assert_eq!(
        actions(&plan),
        [
            ("list.a".into(), Action::Adopt, false),
            ("list.b".into(), Action::Create, false)
        ]
    );
}

#[test]
fn a_managed_resource_deleted_outside_klsync_is_created_again() {
    let mut managed = ManagedState::new();
    manage(&mut managed, ResourceKind::List, "vip", "L-deleted", false);
    let mut desired = DesiredState::default();
    want_list(&mut desired, "vip", "VIP", None, &[]);
    let plan = plan(&desired, &live(), &managed);
    assert_eq!(actions(&plan), [("list.vip".into(), Action::Create, false)]);
    assert!(
        plan.changes[0]
            .note
            .as_deref()
            .unwrap()
            .contains("deleted outside klsync")
    );
}

#[test]
fn a_missing_opt_in_process_leaves_klaviyos_value_alone() {
    let mut live = live();
    live_list(&mut live, "L1", "VIP", Some(OptInProcess::DoubleOptIn), &[]);
    let mut managed = ManagedState::new();
    manage(&mut managed, ResourceKind::List, "vip", "L1", false);
    let mut desired = DesiredState::default();
    want_list(&mut desired, "vip", "VIP", None, &[]);
    assert!(plan(&desired, &live, &managed).is_empty());
}

#[test]
fn segment_definitions_compare_after_normalisation() {
    let mut live = live();
    live_segment(
        &mut live,
        "S1",
        "Members",
        json!({"condition_groups": [{"conditions": [{"timeframe_filter": null,
            "type": "profile-group-membership", "group_ids": ["L1"], "is_member": true}]}]}),
        &[],
    );
    let mut managed = ManagedState::new();
    manage(&mut managed, ResourceKind::Segment, "members", "S1", false);
    let mut desired = DesiredState::default();
    want_segment(&mut desired, "members", "Members", membership("L1"), &[]);
    assert!(plan(&desired, &live, &managed).is_empty());

    want_segment(&mut desired, "members", "Members", membership("L2"), &[]);
    let plan = plan(&desired, &live, &managed);
    let diff_text = plan.changes[0].definition_diff.as_deref().unwrap();
    assert!(diff_text.contains("-    - L1\n+    - L2\n"), "{diff_text}");
    assert_eq!(plan.cost.requests.get("update_segment"), Some(&1));
}

/// The three-way rule (`klsync::plan::three_way`) in the planner: Klaviyo's canonical spelling of
/// what klsync sent plans nothing; a manifest change and an edit in Klaviyo each plan an update;
/// a record without Klaviyo's answer compares directly.
#[test]
fn segment_definitions_compare_three_ways() {
    let sent = |value: serde_json::Value| {
        json!({"condition_groups": [{"conditions": [{"type": "profile-property",
            "property": "properties['ltv']",
            "filter": {"type": "numeric", "operator": "greater-than", "value": value}}]}]})
    };
    let canonical = |value: f64| {
        let mut definition = sent(json!(value));
        definition["condition_groups"][0]["conditions"][0]["filter"]["negate"] = json!(false);
        definition
    };
    let mut live = live();
    live_segment(&mut live, "S1", "Big", canonical(500.0), &[]);
    let mut managed = ManagedState::new();
    manage(&mut managed, ResourceKind::Segment, "big", "S1", false);
    let mut desired = DesiredState::default();
    want_segment(&mut desired, "big", "Big", sent(json!(500)), &[]);
    // Without Klaviyo's answer: the canonical form looks like a change.
    assert_eq!(plan(&desired, &live, &managed).changes.len(), 1);

    let record = managed.values_mut().next().unwrap();
    record.applied["definition"] = sent(json!(500));
    record.returned =
        Some(json!({"name": "Big", "definition": canonical(500.0), "is_starred": false}));
    assert!(plan(&desired, &live, &managed).is_empty(), "in step");

    want_segment(&mut desired, "big", "Big", sent(json!(600)), &[]);
    let changed = plan(&desired, &live, &managed);
    assert_eq!(
        actions(&changed),
        [("segment.big".into(), Action::Update, false)]
    );
    assert_eq!(changed.changes[0].fields[0].after, sent(json!(600)));
    // The diff shows the manifest change against what was sent: not Klaviyo's `500.0` or its
    // added `negate`.
    let shown = changed.changes[0].definition_diff.as_deref().unwrap();
    assert!(
        shown.contains("-      value: 500\n+      value: 600\n"),
        "{shown}"
    );
    assert!(
        !shown.contains("negate") && !shown.contains("500.0"),
        "{shown}"
    );

    want_segment(&mut desired, "big", "Big", sent(json!(500)), &[]);
    live.segments.get_mut("S1").unwrap().definition = canonical(50.0);
    let restored = plan(&desired, &live, &managed);
    assert_eq!(
        actions(&restored),
        [("segment.big".into(), Action::Update, false)]
    );
    assert_eq!(restored.changes[0].fields[0].before, canonical(50.0));
    assert_eq!(restored.changes[0].fields[0].after, sent(json!(500)));
    // A hand edit is shown against Klaviyo's value, which apply replaces.
    let shown = restored.changes[0].definition_diff.as_deref().unwrap();
    assert!(shown.contains("50.0"), "{shown}");
}

#[test]
fn tag_group_exclusivity_cannot_change() {
    let mut live = live();
    live_group(&mut live, "G1", "lifecycle", false);
    let mut managed = ManagedState::new();
    manage(
        &mut managed,
        ResourceKind::TagGroup,
        "lifecycle",
        "G1",
        false,
    );
    let mut desired = DesiredState::default();
    want_group(&mut desired, "lifecycle", true);
    let error = diff(&desired, &live, &managed, meta()).unwrap_err();
    assert!(matches!(error, PlanError::ExclusiveChanged { .. }));
    assert!(error.to_string().contains("new name"), "{error}");
}

#[test]
fn a_tag_moving_between_groups_is_replaced_and_relinked() {
    let mut live = live();
    live_group(&mut live, "G1", "lifecycle", false);
    live_tag(&mut live, "T1", "vip", "G1");
    live_list(&mut live, "L1", "VIP", None, &["T1"]);
    let mut managed = ManagedState::new();
    manage(
        &mut managed,
        ResourceKind::TagGroup,
        "lifecycle",
        "G1",
        false,
    );
    manage(&mut managed, ResourceKind::Tag, "vip", "T1", false);
    manage(&mut managed, ResourceKind::List, "vip", "L1", false);
    let mut desired = DesiredState::default();
    want_group(&mut desired, "lifecycle", false);
    want_tag(&mut desired, Some("lifecycle"), "vip");
    want_list(&mut desired, "vip", "VIP", None, &["lifecycle/vip"]);
    // The manifest key changed from `vip` (default group) to `lifecycle/vip`: that is a new
    // tag. Move the managed record to the new key to model a group change of the same tag.
    let record = managed
        .remove(&klsync::model::ResourceKey::new(ResourceKind::Tag, "vip"))
        .unwrap();
    managed.insert(
        klsync::model::ResourceKey::new(ResourceKind::Tag, "lifecycle/vip"),
        record,
    );
    live.tags.get_mut("T1").unwrap().group_id = DEFAULT_GROUP.into();
    let plan = plan(&desired, &live, &managed);
    assert_eq!(
        actions(&plan),
        [
            ("tag.lifecycle/vip".into(), Action::Replace, false),
            (
                "tag_link.lifecycle/vip->list.vip".into(),
                Action::Attach,
                false
            ),
        ]
    );
    assert_eq!(plan.changes[1].depends_on, ["tag.lifecycle/vip"]);
    assert!(plan.has_destroys());
}

#[test]
fn links_to_unmanaged_tags_are_never_touched() {
    let mut live = live();
    live_tag(&mut live, "T-mine", "mine", DEFAULT_GROUP);
    live_tag(&mut live, "T-theirs", "theirs", DEFAULT_GROUP);
    live_list(&mut live, "L1", "VIP", None, &["T-mine", "T-theirs"]);
    let mut managed = ManagedState::new();
    manage(&mut managed, ResourceKind::Tag, "mine", "T-mine", false);
    manage(&mut managed, ResourceKind::List, "vip", "L1", false);
    let mut desired = DesiredState::default();
    want_tag(&mut desired, None, "mine");
    want_list(&mut desired, "vip", "VIP", None, &[]);
    let plan = plan(&desired, &live, &managed);
    assert_eq!(
        actions(&plan),
        [("tag_link.mine->list.vip".into(), Action::Detach, false)]
    );
    assert_eq!(plan.cost.requests.get("remove_tag_from_lists"), Some(&1));
}

#[test]
fn attaching_one_tag_to_many_lists_is_one_request() {
    let mut live = live();
    live_tag(&mut live, "T1", "vip", DEFAULT_GROUP);
    let mut managed = ManagedState::new();
    manage(&mut managed, ResourceKind::Tag, "vip", "T1", false);
    let mut desired = DesiredState::default();
    want_tag(&mut desired, None, "vip");
    for key in ["a", "b", "c"] {
        live_list(&mut live, &format!("L-{key}"), key, None, &[]);
        manage(
            &mut managed,
            ResourceKind::List,
            key,
            &format!("L-{key}"),
            false,
        );
        want_list(&mut desired, key, key, None, &["vip"]);
    }
    let plan = plan(&desired, &live, &managed);
    assert_eq!(plan.summary().attach, 3);
    assert_eq!(plan.cost.total_requests, 1);
    assert_eq!(plan.cost.requests.get("tag_lists"), Some(&1));
}

#[test]
fn prevent_destroy_as_last_applied_forbids_the_destroy() {
    let mut live = live();
    live_list(&mut live, "L1", "Keep", None, &[]);
    live_list(&mut live, "L2", "Drop", None, &[]);
    let mut managed = ManagedState::new();
    manage(&mut managed, ResourceKind::List, "keep", "L1", true);
    manage(&mut managed, ResourceKind::List, "drop", "L2", false);
    let plan = plan(&DesiredState::default(), &live, &managed);
    assert_eq!(
        actions(&plan),
        [
            ("list.drop".into(), Action::Destroy, false),
            ("list.keep".into(), Action::Destroy, true),
        ]
    );
    assert_eq!(plan.summary().prevented, 1);
    // Prevented changes never run, so they cost nothing.
    assert_eq!(plan.cost.requests.get("delete_list"), Some(&1));
    // The resource is gone from the manifests, so the note says how to lift the flag.
    let note = plan.changes[1].note.as_deref().unwrap();
    assert!(
        note.contains("declare it again with `prevent_destroy: false`, apply, then remove it"),
        "{note}"
    );
}

/// Issue 11: `prevent_destroy` holds for a resource deleted from the manifests, tags included
/// (they carry their group's flag in their records).
#[test]
fn a_protected_group_deleted_from_the_manifests_keeps_its_tags() {
    let mut live = live();
    live_group(&mut live, "G1", "lifecycle", false);
    live_tag(&mut live, "T1", "vip", "G1");
    let mut managed = ManagedState::new();
    manage(
        &mut managed,
        ResourceKind::TagGroup,
        "lifecycle",
        "G1",
        true,
    );
    manage(&mut managed, ResourceKind::Tag, "lifecycle/vip", "T1", true);
    let plan = plan(&DesiredState::default(), &live, &managed);
    assert_eq!(
        actions(&plan),
        [
            ("tag.lifecycle/vip".into(), Action::Destroy, true),
            ("tag_group.lifecycle".into(), Action::Destroy, true),
        ]
    );
    let note = plan.changes[0].note.as_deref().unwrap();
    assert!(
        note.contains("declare the group with `prevent_destroy: false` and the tag in it"),
        "{note}"
    );
}

#[test]
fn turning_on_prevent_destroy_is_recorded_without_requests() {
    let mut live = live();
    live_list(&mut live, "L1", "Keep", None, &[]);
    let mut managed = ManagedState::new();
    manage(&mut managed, ResourceKind::List, "keep", "L1", false);
    let mut desired = DesiredState::default();
    want_list(&mut desired, "keep", "Keep", None, &[]);
    desired.lists.get_mut("keep").unwrap().prevent_destroy = true;
    let plan = plan(&desired, &live, &managed);
    assert_eq!(
        actions(&plan),
        [("list.keep".into(), Action::Update, false)]
    );
    assert_eq!(plan.changes[0].fields[0].field, "prevent_destroy");
    assert_eq!(plan.cost.total_requests, 0);
    assert_eq!(
        plan.changes[0].applied.as_ref().unwrap()["prevent_destroy"],
        true
    );
}

#[test]
fn a_group_holding_unmanaged_tags_is_not_destroyed() {
    let mut live = live();
    live_group(&mut live, "G1", "old", false);
    live_tag(&mut live, "T1", "theirs", "G1");
    let mut managed = ManagedState::new();
    manage(&mut managed, ResourceKind::TagGroup, "old", "G1", false);
    let plan = plan(&DesiredState::default(), &live, &managed);
    assert_eq!(
        actions(&plan),
        [("tag_group.old".into(), Action::Destroy, true)]
    );
    assert!(plan.changes[0].note.as_deref().unwrap().contains("theirs"));
}

#[test]
fn destroys_come_last_in_reverse_dependency_order() {
    let (desired, live, managed) = every_kind();
    let plan = plan(&desired, &live, &managed);
    let first_destroy = plan
        .changes
        .iter()
        .position(|change| change.action == Action::Destroy)
        .unwrap();
    assert!(
        plan.changes[first_destroy..]
            .iter()
            .all(|c| c.action == Action::Destroy)
    );
    let kinds: Vec<_> = plan.changes[first_destroy..]
        .iter()
        .map(|c| c.kind)
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort_by_key(|kind| std::cmp::Reverse(*kind));
    assert_eq!(kinds, sorted);
    // Detaches run before attaches, so an exclusive group never holds two tags at once.
    let detach = plan
        .changes
        .iter()
        .position(|c| c.action == Action::Detach)
        .unwrap();
    let attach = plan
        .changes
        .iter()
        .position(|c| c.action == Action::Attach)
        .unwrap();
    assert!(detach < attach);
    // The same inputs always give the same plan.
    assert_eq!(plan, diff(&desired, &live, &managed, meta()).unwrap());
}

#[test]
fn unknown_tags_are_reported() {
    let mut desired = DesiredState::default();
    want_list(&mut desired, "vip", "VIP", None, &["nope"]);
    assert_eq!(
        diff(&desired, &live(), &ManagedState::new(), meta()).unwrap_err(),
        PlanError::UnknownTag {
            address: "list.vip".into(),
            tag: "nope".into()
        }
    );
}

#[test]
fn a_state_record_of_a_vanished_resource_is_a_warning_not_a_change() {
    let mut managed = ManagedState::new();
    manage(&mut managed, ResourceKind::List, "gone", "L-gone", false);
    let plan = plan(&DesiredState::default(), &live(), &managed);
    assert!(plan.is_empty());
    assert_eq!(plan.warnings.len(), 1);
    assert!(plan.warnings[0].contains("list.gone"));
}

#[test]
fn a_tag_in_an_undeclared_group_or_without_a_default_group_is_an_error() {
    let mut desired = DesiredState::default();
    want_tag(&mut desired, Some("ghost"), "vip");
    assert_eq!(
        diff(&desired, &live(), &ManagedState::new(), meta()).unwrap_err(),
        PlanError::UnknownTagGroup {
            tag: "ghost/vip".into(),
            group: "ghost".into()
        }
    );
    let mut desired = DesiredState::default();
    want_tag(&mut desired, None, "vip");
    let no_default = klsync::model::LiveState::default();
    assert_eq!(
        diff(&desired, &no_default, &ManagedState::new(), meta()).unwrap_err(),
        PlanError::NoDefaultTagGroup { tag: "vip".into() }
    );
}

#[test]
fn klaviyos_default_group_is_never_adopted() {
    let mut desired = DesiredState::default();
    want_group(&mut desired, "Default Tag Group", false);
    let plan = plan(&desired, &live(), &ManagedState::new());
    assert_eq!(
        actions(&plan),
        [("tag_group.Default Tag Group".into(), Action::Create, false)]
    );
}
