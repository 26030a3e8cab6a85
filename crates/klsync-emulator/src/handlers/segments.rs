//! Segments: CRUD, computed membership, tags.

use serde_json::{Map, Value, json};

use super::lists::{
    date_term_matches, member_page, sort_named, string_term_matches, with_included_tags,
};
use crate::jsonapi::{
    ApiError, HandlerResult, Reply, RequestCtx, apply_fields, identifiers, paginate, relationship,
};
use crate::segments::validate;
use crate::state::{Segment, State, Taggable, in_order, timestamp};
use klaviyo_spec::limits::SEGMENTS_PAGE_MAX;

/// The JSON:API resource for a segment.
pub fn segment_resource(
    ctx: &RequestCtx,
    state: &State,
    s: &Segment,
    with_tags: bool,
    count: bool,
) -> Value {
    let mut attrs = Map::new();
    attrs.insert("name".into(), Value::String(s.name.clone()));
    attrs.insert("definition".into(), s.definition.clone());
    attrs.insert("created".into(), Value::String(s.created.clone()));
    attrs.insert("updated".into(), Value::String(s.updated.clone()));
    attrs.insert("is_active".into(), Value::Bool(s.is_active));
    attrs.insert("is_processing".into(), Value::Bool(s.is_processing));
    attrs.insert("is_starred".into(), Value::Bool(s.is_starred));
    if count {
        attrs.insert(
            "profile_count".into(),
            json!(state.segment_members(&s.id).len()),
        );
    }
    apply_fields(&mut attrs, ctx.fields("segment").as_deref());
    for required in ["is_active", "is_processing", "is_starred"] {
        // The spec requires these three even under a sparse fieldset.
        attrs.entry(required).or_insert(Value::Bool(match required {
            "is_active" => s.is_active,
            "is_processing" => s.is_processing,
            _ => s.is_starred,
        }));
    }
    let mut tags = relationship(ctx, "segments", &s.id, "tags");
    if with_tags {
        tags["data"] = identifiers("tag", &state.tags_of(Taggable::Segment, &s.id));
    }
    json!({
        "type": "segment",
        "id": s.id,
        "attributes": attrs,
        "relationships": {
            "profiles": relationship(ctx, "segments", &s.id, "profiles"),
            "tags": tags,
            "flow-triggers": relationship(ctx, "segments", &s.id, "flow-triggers"),
        },
        "links": { "self": ctx.url(&format!("/api/segments/{}", s.id)) },
    })
}

fn find<'a>(state: &'a State, id: &str) -> Result<&'a Segment, ApiError> {
    super::found(&state.segments, "segment", id)
}

/// `GET /api/segments`.
pub fn get_segments(ctx: &RequestCtx, state: &State) -> HandlerResult {
    let terms = ctx.filter(&[
        ("name", &["any", "equals"]),
        ("id", &["any", "equals"]),
        ("created", &["greater-than"]),
        ("updated", &["greater-than"]),
        ("is_active", &["any", "equals"]),
        ("is_starred", &["equals"]),
    ])?;
    let include_tags = ctx
        .includes(&["tags", "flow-triggers"])?
        .iter()
        .any(|i| i == "tags");
    let mut segments: Vec<&Segment> = in_order(
        state.segments.values().filter(|s| {
            terms.iter().all(|t| match t.field.as_str() {
                "name" => string_term_matches(t, Some(&s.name)),
                "id" => string_term_matches(t, Some(&s.id)),
                "created" => date_term_matches(t, &s.created),
                "updated" => date_term_matches(t, &s.updated),
                "is_active" => bool_matches(&t.value, s.is_active),
                _ => bool_matches(&t.value, s.is_starred),
            })
        }),
        |s| s.seq,
    );
    sort_named(
        ctx,
        &mut segments,
        |s, f| match f {
            "id" => s.id.clone(),
            "name" => s.name.clone(),
            "updated" => s.updated.clone(),
            _ => format!("{:020}", s.seq),
        },
        &["created", "id", "name", "updated"],
    )?;
    let (page, links) = paginate(ctx, &segments, SEGMENTS_PAGE_MAX, SEGMENTS_PAGE_MAX)?;
    let data: Vec<Value> = page
        .iter()
        .map(|s| segment_resource(ctx, state, s, include_tags, false))
        .collect();
    let mut body = json!({ "data": data, "links": links });
    let tag_ids = page
        .iter()
        .flat_map(|s| state.tags_of(Taggable::Segment, &s.id))
        .collect();
    with_included_tags(ctx, state, &mut body, tag_ids, include_tags);
    Ok(Reply::ok(body))
}

fn bool_matches(value: &crate::filter::Literal, have: bool) -> bool {
    use crate::filter::Literal;
    match value {
        Literal::Bool(b) => *b == have,
        Literal::List(items) => items.contains(&Literal::Bool(have)),
        _ => false,
    }
}

/// `GET /api/segments/{id}`.
pub fn get_segment(ctx: &RequestCtx, state: &State) -> HandlerResult {
    let include_tags = ctx
        .includes(&["tags", "flow-triggers"])?
        .iter()
        .any(|i| i == "tags");
    let count = !ctx
        .additional_fields("segment", &["profile_count"])?
        .is_empty();
    let s = find(state, ctx.id())?;
    let mut body = json!({ "data": segment_resource(ctx, state, s, include_tags, count), "links": { "self": ctx.self_link() } });
    with_included_tags(
        ctx,
        state,
        &mut body,
        state.tags_of(Taggable::Segment, &s.id),
        include_tags,
    );
    Ok(Reply::ok(body))
}

fn check_attributes(attrs: &Map<String, Value>) -> Result<(), ApiError> {
    // The spec check (`emulator::spec`) already refused a null where the spec does not allow
    // one; where it does (`is_starred: null`, as the official SDK sends), null leaves the
    // value as it is.
    for (key, value) in attrs.iter().filter(|(_, value)| !value.is_null()) {
        let pointer = format!("/data/attributes/{key}");
        match key.as_str() {
            "name" if value.as_str().is_none_or(|s| s.trim().is_empty()) => {
                return Err(ApiError::invalid(
                    pointer,
                    "'name' must be a non-empty string.",
                ));
            }
            "definition" => validate(value, &pointer)?,
            "is_starred" | "is_active" if !value.is_boolean() => {
                return Err(ApiError::invalid(
                    pointer,
                    format!("'{key}' must be a boolean."),
                ));
            }
            "name" | "is_starred" | "is_active" => {}
            _ => {
                return Err(ApiError::invalid(
                    pointer,
                    format!("'{key}' is not a valid field for the resource 'segment'."),
                ));
            }
        }
    }
    Ok(())
}

/// A definition as the account stores it: as sent, or canonicalised in the
/// `--canonicalize-segments` mode (see [`crate::modes::canonicalize_definition`]).
fn stored_definition(state: &State, definition: &Value) -> Value {
    if state.modes.canonical_segments {
        crate::modes::canonicalize_definition(definition)
    } else {
        definition.clone()
    }
}

/// `POST /api/segments`.
pub fn create_segment(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    let (_, attrs) = ctx.resource("segment")?;
    if attrs.contains_key("is_active") {
        return Err(ApiError::invalid(
            "/data/attributes/is_active",
            "'is_active' cannot be set on create.",
        ));
    }
    check_attributes(attrs)?;
    for required in ["name", "definition"] {
        if !attrs.contains_key(required) {
            return Err(ApiError::invalid(
                format!("/data/attributes/{required}"),
                format!("'{required}' is a required field."),
            ));
        }
    }
    let definition = stored_definition(state, &attrs["definition"]);
    let id = state.create_segment(
        attrs
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        definition,
        attrs
            .get("is_starred")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    );
    let s = &state.segments[&id];
    Ok(Reply::with_status(
        201,
        json!({ "data": segment_resource(ctx, state, s, false, false), "links": { "self": ctx.url(&format!("/api/segments/{id}")) } }),
    ))
}

/// `PATCH /api/segments/{id}`: `is_active: false` must come alone.
pub fn update_segment(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    let (_, attrs) = ctx.resource_for_update("segment")?;
    check_attributes(attrs)?;
    let given = attrs.values().filter(|value| !value.is_null()).count();
    if attrs.get("is_active") == Some(&Value::Bool(false)) && given > 1 {
        return Err(ApiError::invalid(
            "/data/attributes/is_active",
            "'is_active' set to false must be the only attribute in the request.",
        ));
    }
    find(state, ctx.id())?;
    // A null definition is "leave it as it is" (the spec makes it nullable).
    let definition = attrs
        .get("definition")
        .filter(|value| !value.is_null())
        .map(|definition| stored_definition(state, definition));
    if let Some(s) = state.segments.get_mut(ctx.id()) {
        if let Some(name) = attrs.get("name").and_then(Value::as_str) {
            s.name = name.to_owned();
        }
        if let Some(definition) = definition {
            s.definition = definition;
        }
        if let Some(starred) = attrs.get("is_starred").and_then(Value::as_bool) {
            s.is_starred = starred;
        }
        if let Some(active) = attrs.get("is_active").and_then(Value::as_bool) {
            s.is_active = active;
        }
        s.updated = timestamp();
    }
    let s = find(state, ctx.id())?;
    Ok(Reply::ok(
        json!({ "data": segment_resource(ctx, state, s, false, false), "links": { "self": ctx.self_link() } }),
    ))
}

/// `DELETE /api/segments/{id}`.
pub fn delete_segment(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    if state.delete_segment(ctx.id()) {
        Ok(Reply::no_content())
    } else {
        Err(ApiError::not_found("segment", ctx.id()))
    }
}

/// `GET /api/segments/{id}/profiles` and `/relationships/profiles`.
pub fn get_segment_profiles(ctx: &RequestCtx, state: &State, ids_only: bool) -> HandlerResult {
    let s = find(state, ctx.id())?;
    let members = state
        .segment_members(&s.id)
        .into_iter()
        .map(|id| {
            // Membership is computed on read; the profile's creation stands in for the join time.
            let joined = state
                .profiles
                .get(&id)
                .map(|p| p.created.clone())
                .unwrap_or_default();
            (id, joined)
        })
        .collect();
    member_page(
        ctx,
        state,
        members,
        &[("profile_id", &["any", "equals"])],
        ids_only,
    )
}
