//! Profiles: get/list/create/update and the `profile-import` upsert.

use serde_json::{Map, Value, json};

use super::lists::list_resource;
use super::segments::segment_resource;
use crate::filter::{self, Term};
use crate::jsonapi::{
    ApiError, HandlerResult, Reply, RequestCtx, apply_fields, identifiers, paginate, relationship,
};
use crate::state::{
    PROFILE_IDENTIFIERS, PROFILE_STRING_FIELDS, Profile, State, identifier_eq, in_order, timestamp,
};
use klaviyo_spec::limits::PROFILES_PAGE_MAX;

/// Largest body accepted by the single-profile writes.
pub const MAX_PROFILE_BODY: usize = 100 * 1024;

/// The JSON:API resource for a profile.
pub fn profile_resource(ctx: &RequestCtx, p: &Profile, extra: Option<(&str, Value)>) -> Value {
    let mut attrs = Map::new();
    for key in PROFILE_STRING_FIELDS {
        attrs.insert(
            (*key).to_owned(),
            p.attributes.get(*key).cloned().unwrap_or(Value::Null),
        );
    }
    attrs.insert(
        "location".into(),
        p.attributes.get("location").cloned().unwrap_or(Value::Null),
    );
    attrs.insert(
        "properties".into(),
        p.attributes
            .get("properties")
            .cloned()
            .unwrap_or_else(|| json!({})),
    );
    attrs.insert("created".into(), Value::String(p.created.clone()));
    attrs.insert("updated".into(), Value::String(p.updated.clone()));
    attrs.insert("last_event_date".into(), Value::Null);
    if let Some((key, value)) = extra {
        attrs.insert(key.to_owned(), value);
    }
    apply_fields(&mut attrs, ctx.fields("profile").as_deref());
    let mut relationships = Map::new();
    for rel in ["lists", "segments", "push-tokens", "conversations"] {
        relationships.insert(rel.into(), relationship(ctx, "profiles", &p.id, rel));
    }
    json!({
        "type": "profile",
        "id": p.id,
        "attributes": attrs,
        "relationships": relationships,
        "links": { "self": ctx.url(&format!("/api/profiles/{}", p.id)) },
    })
}

/// Klaviyo's check of an email address, as strict as its refusals show: a dot-atom local part
/// (no leading, trailing or doubled dot) and a domain of letter-digit-hyphen labels, none empty,
/// none starting or ending with a hyphen, under an alphabetic top-level domain. klsync checks
/// less before sending (see `sync::identify`), so rows the emulator refuses here reach a bulk
/// import job and are refused one by one in its import errors, as on Klaviyo.
fn is_valid_email(email: &str) -> bool {
    const LOCAL_SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let local_ok = (1..=64).contains(&local.len())
        && local.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || LOCAL_SPECIALS.contains(c))
        });
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic()));
    email.len() <= 254 && local_ok && domain_ok
}

/// E.164 (`+`, a non-zero digit, 1 to 14 more), and for the North American numbering plan
/// (`+1`) its rules as a phone library applies them: ten digits whose area and exchange codes
/// start with 2 to 9.
fn is_e164(phone: &str) -> bool {
    let Some(digits) = phone.strip_prefix('+') else {
        return false;
    };
    let shape = (2..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0');
    match digits.strip_prefix('1') {
        Some(national) if shape => {
            let bytes = national.as_bytes();
            bytes.len() == 10 && bytes[0] >= b'2' && bytes[3] >= b'2'
        }
        _ => shape,
    }
}

/// Checks profile attributes sent at `/data/attributes`; `_kx` is allowed for upserts.
pub fn validate_attributes(attrs: &Map<String, Value>, allow_kx: bool) -> Result<(), ApiError> {
    for (key, value) in attrs {
        let pointer = format!("/data/attributes/{key}");
        if PROFILE_STRING_FIELDS.contains(&key.as_str()) {
            match value {
                Value::Null => {}
                Value::String(s) if key == "email" && !is_valid_email(s) => {
                    return Err(ApiError::invalid(
                        pointer,
                        format!("Invalid email address '{s}'."),
                    ));
                }
                Value::String(s) if key == "phone_number" && !is_e164(s) => {
                    return Err(ApiError::invalid(
                        pointer,
                        format!("Invalid phone number format '{s}'; use E.164, e.g. +15005550006."),
                    ));
                }
                Value::String(_) => {}
                _ => {
                    return Err(ApiError::invalid(
                        pointer,
                        format!("'{key}' must be a string or null."),
                    ));
                }
            }
        } else if key == "location" || key == "properties" {
            if !(value.is_null() || value.is_object()) {
                return Err(ApiError::invalid(
                    pointer,
                    format!("'{key}' must be an object or null."),
                ));
            }
        } else if key == "_kx" && allow_kx {
        } else {
            return Err(ApiError::invalid(
                pointer,
                format!("'{key}' is not a valid field for the resource 'profile'."),
            ));
        }
    }
    Ok(())
}

fn has_identifier(attrs: &Map<String, Value>) -> bool {
    PROFILE_IDENTIFIERS.iter().any(|k| {
        attrs
            .get(*k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    })
}

/// Writes `attrs` onto a profile. With `null_clears` (PATCH, profile-import) a null removes the
/// field; without it (bulk import) nulls are ignored. `properties` and `location` merge per key.
pub fn apply_attributes(p: &mut Profile, attrs: &Map<String, Value>, null_clears: bool) {
    for (key, value) in attrs {
        if key == "_kx" {
            continue;
        }
        if value.is_null() {
            if null_clears {
                p.attributes.remove(key);
            }
            continue;
        }
        if let (Some(incoming), true) =
            (value.as_object(), key == "properties" || key == "location")
        {
            let target = p.attributes.entry(key.clone()).or_insert_with(|| json!({}));
            if let Some(target) = target.as_object_mut() {
                for (k, v) in incoming {
                    if v.is_null() && !null_clears {
                        continue;
                    }
                    target.insert(k.clone(), v.clone());
                }
            }
            continue;
        }
        p.attributes.insert(key.clone(), value.clone());
    }
    p.updated = timestamp();
}

/// Applies `meta.patch_properties` (`append`, `unappend`, `unset`).
pub fn apply_patch_properties(p: &mut Profile, data: &Value) -> Result<(), ApiError> {
    let Some(patch) = data.get("meta").and_then(|m| m.get("patch_properties")) else {
        return Ok(());
    };
    let unset_pointer = "/data/attributes/meta/patch_properties/unset";
    let unset: Vec<String> = match patch.get("unset") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::invalid(
                    unset_pointer,
                    "Unset must be a string or an array of strings",
                )
            })?,
        Some(_) => {
            return Err(ApiError::invalid(
                unset_pointer,
                "Unset must be a string or an array of strings",
            ));
        }
    };
    let props = p
        .attributes
        .entry("properties")
        .or_insert_with(|| json!({}));
    let Some(props) = props.as_object_mut() else {
        return Ok(());
    };
    if let Some(append) = patch.get("append").and_then(Value::as_object) {
        for (key, value) in append {
            let entry = props.entry(key.clone()).or_insert_with(|| json!([]));
            if !entry.is_array() {
                *entry = json!([entry.clone()]);
            }
            if let Some(array) = entry.as_array_mut() {
                match value {
                    Value::Array(values) => array.extend(values.iter().cloned()),
                    other => array.push(other.clone()),
                }
            }
        }
    }
    if let Some(unappend) = patch.get("unappend").and_then(Value::as_object) {
        for (key, value) in unappend {
            if let Some(array) = props.get_mut(key).and_then(Value::as_array_mut) {
                let remove: Vec<Value> = match value {
                    Value::Array(values) => values.clone(),
                    other => vec![other.clone()],
                };
                array.retain(|v| !remove.contains(v));
            }
        }
    }
    for key in unset {
        props.remove(&key);
    }
    Ok(())
}

/// A filter term prepared once per request: an `any(...)` of 100 identifiers is checked against
/// every profile, so its values are parsed (and lowercased for emails) once, into a set.
struct Prepared<'a> {
    term: &'a Term,
    /// For string fields: the wanted values (emails lowercased).
    wanted: Option<std::collections::HashSet<String>>,
}

impl<'a> Prepared<'a> {
    fn new(term: &'a Term) -> Self {
        let wanted = match term.field.as_str() {
            "created" | "updated" => None,
            field => Some(
                filter::string_values(&term.value)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|w| {
                        if field == "email" {
                            w.to_ascii_lowercase()
                        } else {
                            w
                        }
                    })
                    .collect(),
            ),
        };
        Prepared { term, wanted }
    }

    fn matches(&self, p: &Profile) -> bool {
        let Some(wanted) = &self.wanted else {
            return term_matches(self.term, p);
        };
        let field = self.term.field.as_str();
        let have = if field == "id" {
            Some(p.id.as_str())
        } else {
            p.get_str(field)
        };
        have.is_some_and(|h| {
            // Same result as `identifier_eq` against each wanted value.
            if field == "email" && h.bytes().any(|b| b.is_ascii_uppercase()) {
                wanted.contains(&h.to_ascii_lowercase())
            } else {
                wanted.contains(h)
            }
        })
    }
}

fn term_matches(term: &Term, p: &Profile) -> bool {
    match term.field.as_str() {
        "created" | "updated" => {
            let have = if term.field == "created" {
                &p.created
            } else {
                &p.updated
            };
            let (Some(have), Some(want)) = (
                filter::datetime_value(&filter::Literal::Str(have.clone())),
                filter::datetime_value(&term.value),
            ) else {
                return false;
            };
            match term.op.as_str() {
                "greater-than" => have > want,
                "less-than" => have < want,
                _ => false,
            }
        }
        field => {
            let have = if field == "id" {
                Some(p.id.as_str())
            } else {
                p.get_str(field)
            };
            let wanted = filter::string_values(&term.value).unwrap_or_default();
            have.is_some_and(|h| wanted.iter().any(|w| identifier_eq(field, w, h)))
        }
    }
}

const PROFILE_FILTERS: &[(&str, &[&str])] = &[
    ("id", &["equals", "any"]),
    ("email", &["equals", "any"]),
    ("phone_number", &["equals", "any"]),
    ("external_id", &["equals", "any"]),
    ("_kx", &["equals"]),
    ("created", &["greater-than", "less-than"]),
    ("updated", &["greater-than", "less-than"]),
];

/// `GET /api/profiles`.
pub fn get_profiles(ctx: &RequestCtx, state: &State) -> HandlerResult {
    let terms = ctx.filter(PROFILE_FILTERS)?;
    ctx.includes(&["conversations", "push-tokens"])?;
    ctx.additional_fields("profile", &["subscriptions", "predictive_analytics"])?;
    let prepared: Vec<Prepared<'_>> = terms.iter().map(Prepared::new).collect();
    let mut profiles: Vec<&Profile> = in_order(
        state
            .profiles
            .values()
            .filter(|p| prepared.iter().all(|t| t.matches(p))),
        |p| p.seq,
    );
    if let Some(sort) = ctx.query_value("sort") {
        let (desc, key) = sort.strip_prefix('-').map_or((false, sort), |k| (true, k));
        match key {
            "created" | "id" => {}
            "email" => profiles.sort_by(|a, b| a.get_str("email").cmp(&b.get_str("email"))),
            "updated" => profiles.sort_by(|a, b| a.updated.cmp(&b.updated)),
            _ => {
                return Err(ApiError::invalid_parameter(
                    "sort",
                    format!("'{sort}' is not a valid sort."),
                ));
            }
        }
        if desc {
            profiles.reverse();
        }
    }
    let (page, links) = paginate(ctx, &profiles, 20, PROFILES_PAGE_MAX)?;
    let data: Vec<Value> = page
        .iter()
        .map(|p| profile_resource(ctx, p, None))
        .collect();
    Ok(Reply::ok(json!({ "data": data, "links": links })))
}

/// `GET /api/profiles/{id}`.
pub fn get_profile(ctx: &RequestCtx, state: &State) -> HandlerResult {
    let includes = ctx.includes(&["lists", "segments", "push-tokens", "conversations"])?;
    ctx.additional_fields("profile", &["subscriptions", "predictive_analytics"])?;
    let p = super::found(&state.profiles, "profile", ctx.id())?;
    let mut resource = profile_resource(ctx, p, None);
    let mut included = Vec::new();
    if includes.iter().any(|i| i == "lists") {
        let lists: Vec<_> = in_order(
            state
                .lists
                .values()
                .filter(|l| l.members.contains_key(&p.id)),
            |l| l.seq,
        );
        resource["relationships"]["lists"]["data"] =
            identifiers("list", lists.iter().map(|l| &l.id));
        included.extend(
            lists
                .iter()
                .map(|l| list_resource(ctx, state, l, false, false)),
        );
    }
    if includes.iter().any(|i| i == "segments") {
        let segments: Vec<_> = in_order(
            state
                .segments
                .values()
                .filter(|s| state.segment_members(&s.id).contains(&p.id)),
            |s| s.seq,
        );
        resource["relationships"]["segments"]["data"] =
            identifiers("segment", segments.iter().map(|s| &s.id));
        included.extend(
            segments
                .iter()
                .map(|s| segment_resource(ctx, state, s, false, false)),
        );
    }
    let mut body = json!({ "data": resource, "links": { "self": ctx.self_link() } });
    if !includes.is_empty() {
        body["included"] = Value::Array(included);
    }
    Ok(Reply::ok(body))
}

/// `GET /api/profiles/{id}/lists` and `/relationships/lists`.
pub fn get_lists_for_profile(ctx: &RequestCtx, state: &State, ids_only: bool) -> HandlerResult {
    let p = super::found(&state.profiles, "profile", ctx.id())?;
    let lists = in_order(
        state
            .lists
            .values()
            .filter(|l| l.members.contains_key(&p.id)),
        |l| l.seq,
    );
    let data: Vec<Value> = if ids_only {
        lists
            .iter()
            .map(|l| json!({"type": "list", "id": l.id}))
            .collect()
    } else {
        lists
            .iter()
            .map(|l| list_resource(ctx, state, l, false, false))
            .collect()
    };
    Ok(Reply::ok(
        json!({ "data": data, "links": { "self": ctx.self_link() } }),
    ))
}

/// `GET /api/profiles/{id}/segments` and `/relationships/segments`.
pub fn get_segments_for_profile(ctx: &RequestCtx, state: &State, ids_only: bool) -> HandlerResult {
    let p = super::found(&state.profiles, "profile", ctx.id())?;
    let segments = in_order(
        state
            .segments
            .values()
            .filter(|s| state.segment_members(&s.id).contains(&p.id)),
        |s| s.seq,
    );
    let data: Vec<Value> = if ids_only {
        segments
            .iter()
            .map(|s| json!({"type": "segment", "id": s.id}))
            .collect()
    } else {
        segments
            .iter()
            .map(|s| segment_resource(ctx, state, s, false, false))
            .collect()
    };
    Ok(Reply::ok(
        json!({ "data": data, "links": { "self": ctx.self_link() } }),
    ))
}

/// `POST /api/profiles`.
pub fn create_profile(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    let (_, attrs) = ctx.resource("profile")?;
    validate_attributes(attrs, false)?;
    if !has_identifier(attrs) {
        return Err(ApiError::invalid(
            "/data/attributes",
            "One or more identifiers is required: email, phone_number or external_id.",
        ));
    }
    if let Some(existing) = state.profiles_matching(attrs, None).first() {
        return Err(ApiError::duplicate_profile(existing));
    }
    let id = state.create_profile(attrs.clone());
    let p = &state.profiles[&id];
    Ok(Reply::with_status(
        201,
        json!({ "data": profile_resource(ctx, p, None), "links": { "self": ctx.url(&format!("/api/profiles/{id}")) } }),
    ))
}

/// `PATCH /api/profiles/{id}`.
pub fn update_profile(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    let (data, attrs) = ctx.resource_for_update("profile")?;
    validate_attributes(attrs, false)?;
    let id = ctx.id().to_owned();
    if !state.profiles.contains_key(&id) {
        return Err(ApiError::not_found("profile", &id));
    }
    if let Some(other) = state.profiles_matching(attrs, Some(&id)).first() {
        return Err(ApiError::duplicate_profile(other));
    }
    let mut p = state.profiles[&id].clone();
    apply_attributes(&mut p, attrs, true);
    apply_patch_properties(&mut p, data)?;
    let body =
        json!({ "data": profile_resource(ctx, &p, None), "links": { "self": ctx.self_link() } });
    state.put_profile(p);
    Ok(Reply::ok(body))
}

/// The one profile sharing an identifier with `attributes`, if any; two of them (the row names
/// two profiles, by two identifiers) is Klaviyo's duplicate-profile error.
pub fn the_profile_matching(
    state: &State,
    attributes: &Map<String, Value>,
) -> Result<Option<String>, ApiError> {
    match state.profiles_matching(attributes, None).as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        [_, second, ..] => Err(ApiError::duplicate_profile(second)),
    }
}

/// `POST /api/profile-import`: 201 when created, 200 when updated.
pub fn create_or_update_profile(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    let (data, attrs) = ctx.resource("profile")?;
    validate_attributes(attrs, true)?;
    let target = match data.get("id").and_then(Value::as_str) {
        Some(id) => {
            if !state.profiles.contains_key(id) {
                return Err(ApiError::not_found("profile", id));
            }
            if let Some(other) = state.profiles_matching(attrs, Some(id)).first() {
                return Err(ApiError::duplicate_profile(other));
            }
            Some(id.to_owned())
        }
        None => the_profile_matching(state, attrs)?,
    };
    let (status, id) = match target {
        Some(id) => {
            let mut p = state.profiles[&id].clone();
            apply_attributes(&mut p, attrs, true);
            apply_patch_properties(&mut p, data)?;
            state.put_profile(p);
            (200, id)
        }
        None => {
            if !has_identifier(attrs) {
                return Err(ApiError::invalid(
                    "/data/attributes",
                    "One or more identifiers is required: email, phone_number or external_id.",
                ));
            }
            let mut clean = attrs.clone();
            clean.remove("_kx");
            let id = state.create_profile(clean);
            let mut p = state.profiles[&id].clone();
            apply_patch_properties(&mut p, data)?;
            state.put_profile(p);
            (201, id)
        }
    };
    let p = &state.profiles[&id];
    Ok(Reply::with_status(
        status,
        json!({ "data": profile_resource(ctx, p, None), "links": { "self": ctx.url(&format!("/api/profiles/{id}")) } }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_and_phone_validation() {
        assert!(is_valid_email("a.b+c@example.co.uk"));
        assert!(!is_valid_email("not-an-email"));
        assert!(!is_valid_email("a@b"));
        assert!(!is_valid_email("a b@c.com"));
        // Stricter than klsync's own check, as Klaviyo is.
        for refused in [
            "a..b@example.com",
            ".a@example.com",
            "a@example..com",
            "a@-x.com",
            "a@x.c0m",
            "a@x.c",
        ] {
            assert!(!is_valid_email(refused), "{refused}");
        }
        assert!(is_valid_email("o'brien+tag@mail.example-shop.de"));
        assert!(is_e164("+15005550006"));
        assert!(!is_e164("5005550006"));
        assert!(!is_e164("+1 500"));
        assert!(!is_e164("+0123"));
        // North American numbers: area and exchange codes start with 2 to 9, ten digits.
        assert!(!is_e164("+11005550006"));
        assert!(!is_e164("+15001550006"));
        assert!(!is_e164("+1500555000"));
        assert!(is_e164("+442071838750"));
    }

    #[test]
    fn attributes_merge_and_null_semantics() {
        let mut state = State::new(0);
        let id = state.create_profile(
            json!({"email": "a@x.com", "first_name": "A", "properties": {"k1": 1, "k2": 2}})
                .as_object()
                .cloned()
                .unwrap(),
        );
        let mut p = state.profiles[&id].clone();
        let update = json!({"first_name": null, "properties": {"k2": 3, "k3": null}});
        apply_attributes(&mut p, update.as_object().unwrap(), false);
        assert_eq!(p.get_str("first_name"), Some("A"));
        assert_eq!(p.attributes["properties"], json!({"k1": 1, "k2": 3}));
        apply_attributes(&mut p, update.as_object().unwrap(), true);
        assert_eq!(p.get_str("first_name"), None);
        assert_eq!(
            p.attributes["properties"],
            json!({"k1": 1, "k2": 3, "k3": null})
        );
    }
}
