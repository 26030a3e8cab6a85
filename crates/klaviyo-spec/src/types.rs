//! Klaviyo resources as klsync uses them, and the JSON:API documents they travel in.
//!
//! Public types ([`List`], [`Segment`], [`Tag`], ...) are flat and convenient; the `Wire*` types
//! mirror the spec's request and response schemas exactly (revision 2026-07-15) and convert to and
//! from them. Request bodies are built only here so that one place answers "does this validate
//! against the spec's `requestBody` schema".

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A list's opt-in process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptInProcess {
    /// Profiles join immediately.
    SingleOptIn,
    /// Profiles confirm by email first.
    DoubleOptIn,
}

/// A Klaviyo list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct List {
    /// Klaviyo's list id.
    pub id: String,
    /// The list name (Klaviyo allows null; read as empty).
    pub name: String,
    /// The opt-in process, when Klaviyo reports one.
    pub opt_in_process: Option<OptInProcess>,
    /// Creation time as Klaviyo formats it.
    pub created: Option<String>,
    /// Last update time as Klaviyo formats it.
    pub updated: Option<String>,
    /// Ids of the tags on this list; filled only when fetched with tags included.
    pub tag_ids: Vec<String>,
}

/// A Klaviyo segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// Klaviyo's segment id.
    pub id: String,
    /// The segment name.
    pub name: String,
    /// The `definition` object (`condition_groups`), as Klaviyo returned it.
    pub definition: Option<Value>,
    /// Whether the segment is active.
    pub is_active: bool,
    /// Whether membership is still being computed.
    pub is_processing: bool,
    /// Whether the segment is starred.
    pub is_starred: bool,
    /// Creation time as Klaviyo formats it.
    pub created: Option<String>,
    /// Last update time as Klaviyo formats it.
    pub updated: Option<String>,
    /// Ids of the tags on this segment; filled only when fetched with tags included.
    pub tag_ids: Vec<String>,
}

/// Changes to a segment; `None` leaves a field unchanged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentUpdate {
    /// New name.
    pub name: Option<String>,
    /// New definition (`condition_groups`).
    pub definition: Option<Value>,
    /// New starred flag.
    pub is_starred: Option<bool>,
    /// Activate or deactivate. Klaviyo requires `false` to be the only attribute sent.
    pub is_active: Option<bool>,
}

/// A Klaviyo tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tag {
    /// Klaviyo's tag id.
    pub id: String,
    /// The tag name.
    pub name: String,
    /// The tag group, when fetched with `include=tag-group` or known from the create.
    pub tag_group_id: Option<String>,
}

/// A Klaviyo tag group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TagGroup {
    /// Klaviyo's tag-group id.
    pub id: String,
    /// The group name.
    pub name: String,
    /// Whether a resource may carry at most one tag of this group.
    pub exclusive: bool,
    /// Whether this is the account's Default Tag Group.
    pub default: bool,
}

/// Which identifier a profile lookup uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileIdentifier {
    /// `email`
    Email,
    /// `external_id`
    ExternalId,
    /// `phone_number` (E.164)
    PhoneNumber,
    /// `id`: the profile's Klaviyo id (`GET /api/profiles` filters by it [spec]; lookups only).
    Id,
}

impl ProfileIdentifier {
    /// The attribute name Klaviyo filters on.
    pub fn field(self) -> &'static str {
        match self {
            ProfileIdentifier::Email => "email",
            ProfileIdentifier::ExternalId => "external_id",
            ProfileIdentifier::PhoneNumber => "phone_number",
            ProfileIdentifier::Id => "id",
        }
    }
}

/// A profile as Klaviyo returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Profile {
    /// Klaviyo's profile id (a ULID).
    pub id: String,
    /// The profile's attributes.
    pub attributes: ProfileData,
}

/// The readable attributes of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ProfileData {
    /// Email address.
    #[serde(default)]
    pub email: Option<String>,
    /// Phone number (E.164).
    #[serde(default)]
    pub phone_number: Option<String>,
    /// External system id.
    #[serde(default)]
    pub external_id: Option<String>,
    /// First name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// Organization.
    #[serde(default)]
    pub organization: Option<String>,
    /// Locale (BCP 47).
    #[serde(default)]
    pub locale: Option<String>,
    /// Job title.
    #[serde(default)]
    pub title: Option<String>,
    /// Image URL.
    #[serde(default)]
    pub image: Option<String>,
    /// Location object, as returned.
    #[serde(default)]
    pub location: Option<Value>,
    /// Custom properties.
    #[serde(default, deserialize_with = "null_as_default")]
    pub properties: Map<String, Value>,
    /// Creation time.
    #[serde(default)]
    pub created: Option<String>,
    /// Last update time.
    #[serde(default)]
    pub updated: Option<String>,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Profile attributes to write. For each field: `None` leaves it unchanged (omitted from the
/// body), `Some(None)` clears it (sent as `null`; bulk import ignores nulls), `Some(Some(v))`
/// sets it.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ProfileAttributes {
    /// Email address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<Option<String>>,
    /// Phone number (E.164).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<Option<String>>,
    /// External system id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<Option<String>>,
    /// First name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<Option<String>>,
    /// Last name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<Option<String>>,
    /// Organization.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<Option<String>>,
    /// Locale (BCP 47).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<Option<String>>,
    /// Job title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<Option<String>>,
    /// Image URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Option<String>>,
    /// Location fields (`address1`, `city`, `latitude`, ...), as the spec's `ProfileLocation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Map<String, Value>>,
    /// Custom properties to set (merged per key by Klaviyo).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
}

impl ProfileAttributes {
    /// The first identifier set on these attributes, in the order Klaviyo matches them.
    pub fn identifier(&self) -> Option<(ProfileIdentifier, &str)> {
        fn set(field: &Option<Option<String>>) -> Option<&str> {
            field.as_ref()?.as_deref()
        }
        None.or_else(|| Some((ProfileIdentifier::Email, set(&self.email)?)))
            .or_else(|| Some((ProfileIdentifier::PhoneNumber, set(&self.phone_number)?)))
            .or_else(|| Some((ProfileIdentifier::ExternalId, set(&self.external_id)?)))
    }
}

/// The result of `POST /profile-import`.
#[derive(Debug, Clone, PartialEq)]
pub struct Upserted {
    /// The profile after the upsert.
    pub profile: Profile,
    /// `true` if Klaviyo created it (201), `false` if it updated an existing one (200).
    pub created: bool,
}

/// Status of a bulk import job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting to start.
    Queued,
    /// Running.
    Processing,
    /// Finished.
    Complete,
    /// Cancelled.
    Cancelled,
}

/// A profile bulk import job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BulkImportJob {
    /// Job id.
    pub id: String,
    /// Current status.
    pub status: JobStatus,
    /// Profiles in the job.
    pub total_count: u64,
    /// Profiles processed so far.
    pub completed_count: u64,
    /// Profiles that failed.
    pub failed_count: u64,
    /// Creation time.
    pub created_at: String,
    /// Completion time, once complete.
    pub completed_at: Option<String>,
    /// Ids of the lists the profiles are added to.
    pub list_ids: Vec<String>,
}

/// One failed profile of a bulk import job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportError {
    /// Error id.
    pub id: String,
    /// Error code.
    pub code: String,
    /// Title.
    pub title: String,
    /// Detail.
    pub detail: String,
    /// JSON pointer into the submitted profile.
    pub source_pointer: Option<String>,
    /// The profile as submitted.
    pub original_payload: Option<Value>,
}

// ---- wire documents -------------------------------------------------------------------------

/// `{"type": ..., "id": ...}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identifier {
    /// The resource type (`list`, `profile`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The resource id.
    pub id: String,
}

impl Identifier {
    /// An identifier of a `kind` resource.
    pub fn new(kind: &str, id: &str) -> Self {
        Identifier {
            kind: kind.to_string(),
            id: id.to_string(),
        }
    }
}

/// A relationship's `data`: one identifier, many, or null.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RelationshipData {
    /// A to-many relationship.
    Many(Vec<Identifier>),
    /// A to-one relationship.
    One(Identifier),
}

/// One entry of a resource's `relationships`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Relationship {
    /// The related identifiers, or null.
    #[serde(default)]
    pub data: Option<RelationshipData>,
}

impl Relationship {
    fn ids(&self) -> Vec<String> {
        match &self.data {
            Some(RelationshipData::Many(ids)) => ids.iter().map(|i| i.id.clone()).collect(),
            Some(RelationshipData::One(id)) => vec![id.id.clone()],
            None => Vec::new(),
        }
    }
}

/// A resource object in a response.
#[derive(Debug, Clone, Deserialize)]
pub struct Resource<A> {
    /// The resource id.
    pub id: String,
    /// The resource's attributes, typed per resource.
    pub attributes: A,
    /// Related resources, kept raw and read by name.
    #[serde(default)]
    pub relationships: Map<String, Value>,
}

impl<A> Resource<A> {
    fn related_ids(&self, name: &str) -> Vec<String> {
        self.relationships
            .get(name)
            .and_then(|value| Relationship::deserialize(value).ok())
            .map(|rel| rel.ids())
            .unwrap_or_default()
    }
}

/// `links` of a collection document.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct CollectionLinks {
    /// The next page's URL; absent on the last page.
    #[serde(default)]
    pub next: Option<String>,
}

/// A collection response: `data[]` plus `links.next`.
#[derive(Debug, Clone, Deserialize)]
pub struct CollectionDocument<T> {
    /// This page's resources.
    pub data: Vec<T>,
    /// Pagination links.
    #[serde(default)]
    pub links: Option<CollectionLinks>,
}

/// A single-resource response.
#[derive(Debug, Clone, Deserialize)]
pub struct SingleDocument<T> {
    /// The resource.
    pub data: T,
}

/// `attributes` of a `list` resource in a response.
#[derive(Debug, Clone, Deserialize)]
pub struct WireListAttributes {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    opt_in_process: Option<OptInProcess>,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    updated: Option<String>,
}

impl From<Resource<WireListAttributes>> for List {
    fn from(resource: Resource<WireListAttributes>) -> Self {
        let tag_ids = resource.related_ids("tags");
        let a = resource.attributes;
        List {
            id: resource.id,
            name: a.name.unwrap_or_default(),
            opt_in_process: a.opt_in_process,
            created: a.created,
            updated: a.updated,
            tag_ids,
        }
    }
}

/// `attributes` of a `segment` resource in a response.
#[derive(Debug, Clone, Deserialize)]
pub struct WireSegmentAttributes {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    definition: Option<Value>,
    #[serde(default)]
    is_active: bool,
    #[serde(default)]
    is_processing: bool,
    #[serde(default)]
    is_starred: bool,
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    updated: Option<String>,
}

impl From<Resource<WireSegmentAttributes>> for Segment {
    fn from(resource: Resource<WireSegmentAttributes>) -> Self {
        let tag_ids = resource.related_ids("tags");
        let a = resource.attributes;
        Segment {
            id: resource.id,
            name: a.name.unwrap_or_default(),
            definition: a.definition,
            is_active: a.is_active,
            is_processing: a.is_processing,
            is_starred: a.is_starred,
            created: a.created,
            updated: a.updated,
            tag_ids,
        }
    }
}

/// `attributes` of a `tag` resource in a response.
#[derive(Debug, Clone, Deserialize)]
pub struct WireTagAttributes {
    name: String,
}

impl From<Resource<WireTagAttributes>> for Tag {
    fn from(resource: Resource<WireTagAttributes>) -> Self {
        let tag_group_id = resource.related_ids("tag-group").into_iter().next();
        Tag {
            id: resource.id,
            name: resource.attributes.name,
            tag_group_id,
        }
    }
}

/// `attributes` of a `tag-group` resource in a response.
#[derive(Debug, Clone, Deserialize)]
pub struct WireTagGroupAttributes {
    name: String,
    #[serde(default)]
    exclusive: bool,
    #[serde(default)]
    default: bool,
}

impl From<Resource<WireTagGroupAttributes>> for TagGroup {
    fn from(resource: Resource<WireTagGroupAttributes>) -> Self {
        let a = resource.attributes;
        TagGroup {
            id: resource.id,
            name: a.name,
            exclusive: a.exclusive,
            default: a.default,
        }
    }
}

impl From<Resource<ProfileData>> for Profile {
    fn from(resource: Resource<ProfileData>) -> Self {
        Profile {
            id: resource.id,
            attributes: resource.attributes,
        }
    }
}

/// `attributes` of a `profile-bulk-import-job` resource in a response.
#[derive(Debug, Clone, Deserialize)]
pub struct WireJobAttributes {
    status: JobStatus,
    created_at: String,
    total_count: u64,
    #[serde(default)]
    completed_count: Option<u64>,
    #[serde(default)]
    failed_count: Option<u64>,
    #[serde(default)]
    completed_at: Option<String>,
}

impl From<Resource<WireJobAttributes>> for BulkImportJob {
    fn from(resource: Resource<WireJobAttributes>) -> Self {
        let list_ids = resource.related_ids("lists");
        let a = resource.attributes;
        BulkImportJob {
            id: resource.id,
            status: a.status,
            total_count: a.total_count,
            completed_count: a.completed_count.unwrap_or(0),
            failed_count: a.failed_count.unwrap_or(0),
            created_at: a.created_at,
            completed_at: a.completed_at,
            list_ids,
        }
    }
}

/// `attributes` of an `import-error` resource in a response.
#[derive(Debug, Clone, Deserialize)]
pub struct WireImportErrorAttributes {
    code: String,
    title: String,
    detail: String,
    #[serde(default)]
    source: Option<WirePointer>,
    #[serde(default)]
    original_payload: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct WirePointer {
    #[serde(default)]
    pointer: Option<String>,
}

impl From<Resource<WireImportErrorAttributes>> for ImportError {
    fn from(resource: Resource<WireImportErrorAttributes>) -> Self {
        let a = resource.attributes;
        ImportError {
            id: resource.id,
            code: a.code,
            title: a.title,
            detail: a.detail,
            source_pointer: a.source.and_then(|s| s.pointer),
            original_payload: a.original_payload,
        }
    }
}

/// The id of a relationship identifier, as a paginated item (list and segment members, a
/// tag's lists).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberId(pub String);

impl From<Identifier> for MemberId {
    fn from(identifier: Identifier) -> Self {
        MemberId(identifier.id)
    }
}

// ---- request bodies (each matches the named schema in the spec) -----------------------------

/// `ListCreateQuery`
pub fn list_create(name: &str, opt_in: Option<OptInProcess>) -> Value {
    let mut attributes = Map::new();
    attributes.insert("name".into(), name.into());
    if let Some(opt_in) = opt_in {
        attributes.insert(
            "opt_in_process".into(),
            serde_json::to_value(opt_in).expect("enum"),
        );
    }
    serde_json::json!({"data": {"type": "list", "attributes": attributes}})
}

/// `ListPartialUpdateQuery`
pub fn list_update(id: &str, name: Option<&str>, opt_in: Option<OptInProcess>) -> Value {
    let mut attributes = Map::new();
    if let Some(name) = name {
        attributes.insert("name".into(), name.into());
    }
    if let Some(opt_in) = opt_in {
        attributes.insert(
            "opt_in_process".into(),
            serde_json::to_value(opt_in).expect("enum"),
        );
    }
    serde_json::json!({"data": {"type": "list", "id": id, "attributes": attributes}})
}

/// `ListMembersAddQuery` / `ListMembersDeleteQuery` / `TagListOp` / `TagSegmentOp`:
/// `{"data": [{"type": kind, "id": ...}]}`.
pub fn identifiers(kind: &str, ids: &[String]) -> Value {
    let data: Vec<Identifier> = ids.iter().map(|id| Identifier::new(kind, id)).collect();
    serde_json::json!({ "data": data })
}

/// `ProfileCreateQuery`
pub fn profile_create(attributes: &ProfileAttributes) -> Value {
    serde_json::json!({"data": {"type": "profile", "attributes": attributes}})
}

/// `ProfilePartialUpdateQuery`, with `meta.patch_properties.unset` when keys are to be removed.
pub fn profile_update(id: &str, attributes: &ProfileAttributes, unset: &[String]) -> Value {
    let mut data = serde_json::json!({"type": "profile", "id": id, "attributes": attributes});
    if !unset.is_empty() {
        data["meta"] = serde_json::json!({"patch_properties": {"unset": unset}});
    }
    serde_json::json!({ "data": data })
}

/// `ProfileUpsertQueryResourceObject`
pub fn profile_upsert_object(attributes: &ProfileAttributes) -> Value {
    serde_json::json!({"type": "profile", "attributes": attributes})
}

/// `ProfileUpsertQuery`
pub fn profile_upsert(attributes: &ProfileAttributes) -> Value {
    serde_json::json!({ "data": profile_upsert_object(attributes) })
}

/// `ProfileUpsertQuery` with `meta.patch_properties.unset` when keys are to be removed.
pub fn profile_upsert_unset(attributes: &ProfileAttributes, unset: &[String]) -> Value {
    let mut data = profile_upsert_object(attributes);
    if !unset.is_empty() {
        data["meta"] = serde_json::json!({"patch_properties": {"unset": unset}});
    }
    serde_json::json!({ "data": data })
}

/// `ProfileImportJobCreateQuery`
pub fn bulk_import_job(profiles: &[ProfileAttributes], list_ids: &[String]) -> Value {
    let profiles: Vec<Value> = profiles.iter().map(profile_upsert_object).collect();
    let mut data = serde_json::json!({
        "type": "profile-bulk-import-job",
        "attributes": {"profiles": {"data": profiles}},
    });
    if !list_ids.is_empty() {
        data["relationships"] = serde_json::json!({"lists": identifiers("list", list_ids)});
    }
    serde_json::json!({ "data": data })
}

/// `SegmentCreateQuery`
pub fn segment_create(name: &str, definition: &Value, is_starred: bool) -> Value {
    serde_json::json!({"data": {"type": "segment", "attributes": {
        "name": name, "definition": definition, "is_starred": is_starred,
    }}})
}

/// `SegmentPartialUpdateQuery`
pub fn segment_update(id: &str, update: &SegmentUpdate) -> Value {
    let mut attributes = Map::new();
    if let Some(name) = &update.name {
        attributes.insert("name".into(), name.clone().into());
    }
    if let Some(definition) = &update.definition {
        attributes.insert("definition".into(), definition.clone());
    }
    if let Some(starred) = update.is_starred {
        attributes.insert("is_starred".into(), starred.into());
    }
    if let Some(active) = update.is_active {
        attributes.insert("is_active".into(), active.into());
    }
    serde_json::json!({"data": {"type": "segment", "id": id, "attributes": attributes}})
}

/// `TagCreateQuery`
pub fn tag_create(name: &str, group_id: Option<&str>) -> Value {
    let mut data = serde_json::json!({"type": "tag", "attributes": {"name": name}});
    if let Some(group_id) = group_id {
        data["relationships"] =
            serde_json::json!({"tag-group": {"data": {"type": "tag-group", "id": group_id}}});
    }
    serde_json::json!({ "data": data })
}

/// `TagUpdateQuery`
pub fn tag_update(id: &str, name: &str) -> Value {
    serde_json::json!({"data": {"type": "tag", "id": id, "attributes": {"name": name}}})
}

/// `TagGroupCreateQuery`
pub fn tag_group_create(name: &str, exclusive: bool) -> Value {
    serde_json::json!({"data": {"type": "tag-group", "attributes": {
        "name": name, "exclusive": exclusive,
    }}})
}

/// `TagGroupUpdateQuery`
pub fn tag_group_update(id: &str, name: &str) -> Value {
    serde_json::json!({"data": {"type": "tag-group", "id": id, "attributes": {"name": name}}})
}

/// A Klaviyo filter string literal: double-quoted with JSON escaping, which Klaviyo's filter
/// grammar accepts for quotes and backslashes inside values.
pub fn filter_string(value: &str) -> String {
    serde_json::to_string(value).expect("strings always serialize")
}

/// `[...]` list literal of quoted strings.
pub fn filter_list(values: &[String]) -> String {
    let items: Vec<String> = values.iter().map(|v| filter_string(v)).collect();
    format!("[{}]", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_attributes_distinguish_unchanged_clear_and_set() {
        let attributes = ProfileAttributes {
            email: Some(Some("a@x.com".into())),
            first_name: Some(None),
            ..ProfileAttributes::default()
        };
        let body = profile_update("01P", &attributes, &["old".into()]);
        assert_eq!(
            body,
            serde_json::json!({"data": {"type": "profile", "id": "01P",
                "attributes": {"email": "a@x.com", "first_name": null},
                "meta": {"patch_properties": {"unset": ["old"]}}}})
        );
        assert_eq!(
            attributes.identifier(),
            Some((ProfileIdentifier::Email, "a@x.com"))
        );
    }

    #[test]
    fn list_response_with_included_tags_yields_tag_ids() {
        let doc: CollectionDocument<Resource<WireListAttributes>> =
            serde_json::from_value(serde_json::json!({"data": [{"type": "list", "id": "L1",
                "attributes": {"name": "News", "opt_in_process": "double_opt_in"},
                "relationships": {"tags": {"data": [{"type": "tag", "id": "t1"}]}},
                "links": {"self": "x"}}],
              "links": {"self": "x", "next": null}}))
            .unwrap();
        let list = List::from(doc.data.into_iter().next().unwrap());
        assert_eq!(list.tag_ids, vec!["t1".to_string()]);
        assert_eq!(list.opt_in_process, Some(OptInProcess::DoubleOptIn));
        assert!(doc.links.unwrap().next.is_none());
    }

    #[test]
    fn filter_literals_are_quoted_and_escaped() {
        assert_eq!(
            filter_list(&["a@x.com".into(), "b\"c".into()]),
            r#"["a@x.com","b\"c"]"#
        );
    }

    #[test]
    fn bulk_job_body_has_list_relationship_only_when_lists_given() {
        let body = bulk_import_job(&[ProfileAttributes::default()], &[]);
        assert!(body["data"].get("relationships").is_none());
        let body = bulk_import_job(&[], &["L1".into()]);
        assert_eq!(
            body["data"]["relationships"]["lists"]["data"][0]["id"],
            "L1"
        );
    }
}
