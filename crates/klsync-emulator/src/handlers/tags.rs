//! Tags, tag groups and tag links to lists and segments.

use serde_json::{Map, Value, json};

use super::lists::{sort_named, string_term_matches};
use crate::filter::Literal;
use crate::jsonapi::{ApiError, HandlerResult, Reply, RequestCtx, paginate, relationship};
use crate::state::{State, Tag, TagGroup, Taggable, in_order};
use klaviyo_spec::limits::{TAG_GROUPS_PAGE_MAX, TAGS_PAGE_MAX};

/// The JSON:API resource for a tag.
pub fn tag_resource(ctx: &RequestCtx, t: &Tag) -> Value {
    let mut group = relationship(ctx, "tags", &t.id, "tag-group");
    group["data"] = json!({ "type": "tag-group", "id": t.group_id });
    json!({
        "type": "tag",
        "id": t.id,
        "attributes": { "name": t.name },
        "relationships": {
            "tag-group": group,
            "lists": relationship(ctx, "tags", &t.id, "lists"),
            "segments": relationship(ctx, "tags", &t.id, "segments"),
            "flows": relationship(ctx, "tags", &t.id, "flows"),
            "campaigns": relationship(ctx, "tags", &t.id, "campaigns"),
        },
        "links": { "self": ctx.url(&format!("/api/tags/{}", t.id)) },
    })
}

/// The JSON:API resource for a tag group.
pub fn tag_group_resource(ctx: &RequestCtx, g: &TagGroup) -> Value {
    json!({
        "type": "tag-group",
        "id": g.id,
        "attributes": { "name": g.name, "exclusive": g.exclusive, "default": g.default },
        "relationships": { "tags": relationship(ctx, "tag-groups", &g.id, "tags") },
        "links": { "self": ctx.url(&format!("/api/tag-groups/{}", g.id)) },
    })
}

const NAME_OPS: &[&str] = &["equals", "contains", "starts-with", "ends-with"];

fn find_tag<'a>(state: &'a State, id: &str) -> Result<&'a Tag, ApiError> {
    super::found(&state.tags, "tag", id)
}

fn find_group<'a>(state: &'a State, id: &str) -> Result<&'a TagGroup, ApiError> {
    super::found(&state.tag_groups, "tag-group", id)
}

fn required_name(attrs: &Map<String, Value>, allowed: &[&str]) -> Result<String, ApiError> {
    for key in attrs.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(ApiError::invalid(
                format!("/data/attributes/{key}"),
                format!("'{key}' cannot be set here."),
            ));
        }
    }
    match attrs.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(_) => Err(ApiError::invalid(
            "/data/attributes/name",
            "'name' must be a non-empty string.",
        )),
        None => Err(ApiError::invalid(
            "/data/attributes/name",
            "'name' is a required field.",
        )),
    }
}

/// `GET /api/tags`.
pub fn get_tags(ctx: &RequestCtx, state: &State) -> HandlerResult {
    let terms = ctx.filter(&[("name", NAME_OPS)])?;
    let include_group = ctx
        .includes(&["tag-group"])?
        .iter()
        .any(|i| i == "tag-group");
    let mut tags: Vec<&Tag> = in_order(
        state.tags.values().filter(|t| {
            terms
                .iter()
                .all(|term| string_term_matches(term, Some(&t.name)))
        }),
        |t| t.seq,
    );
    sort_named(
        ctx,
        &mut tags,
        |t, f| {
            if f == "name" {
                t.name.clone()
            } else {
                t.id.clone()
            }
        },
        &["id", "name"],
    )?;
    let (page, links) = paginate(ctx, &tags, TAGS_PAGE_MAX, TAGS_PAGE_MAX)?;
    let data: Vec<Value> = page.iter().map(|t| tag_resource(ctx, t)).collect();
    let mut body = json!({ "data": data, "links": links });
    if include_group {
        let mut groups: Vec<&String> = page.iter().map(|t| &t.group_id).collect();
        groups.dedup();
        let mut seen = Vec::new();
        let included: Vec<Value> = groups
            .into_iter()
            .filter(|g| {
                let new = !seen.contains(g);
                seen.push(*g);
                new
            })
            .filter_map(|g| state.tag_groups.get(g))
            .map(|g| tag_group_resource(ctx, g))
            .collect();
        body["included"] = Value::Array(included);
    }
    Ok(Reply::ok(body))
}

/// `GET /api/tags/{id}`.
pub fn get_tag(ctx: &RequestCtx, state: &State) -> HandlerResult {
    let include_group = ctx
        .includes(&["tag-group"])?
        .iter()
        .any(|i| i == "tag-group");
    let t = find_tag(state, ctx.id())?;
    let mut body = json!({ "data": tag_resource(ctx, t), "links": { "self": ctx.self_link() } });
    if include_group {
        let included: Vec<Value> = state
            .tag_groups
            .get(&t.group_id)
            .map(|g| tag_group_resource(ctx, g))
            .into_iter()
            .collect();
        body["included"] = Value::Array(included);
    }
    Ok(Reply::ok(body))
}

/// `POST /api/tags`.
pub fn create_tag(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    let (data, attrs) = ctx.resource("tag")?;
    let name = required_name(attrs, &["name"])?;
    let group = match data.get("relationships").and_then(|r| r.get("tag-group")) {
        None | Some(Value::Null) => None,
        Some(rel) => {
            let group = rel.get("data").ok_or_else(|| {
                ApiError::invalid(
                    "/data/relationships/tag-group/data",
                    "'data' is a required field.",
                )
            })?;
            if group.get("type").and_then(Value::as_str) != Some("tag-group") {
                return Err(ApiError::invalid(
                    "/data/relationships/tag-group/data/type",
                    "Expected type 'tag-group'.",
                ));
            }
            let id = group.get("id").and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid(
                    "/data/relationships/tag-group/data/id",
                    "'id' is a required field.",
                )
            })?;
            if !state.tag_groups.contains_key(id) {
                return Err(ApiError::invalid(
                    "/data/relationships/tag-group/data/id",
                    format!("A tag-group with id {id} does not exist."),
                ));
            }
            Some(id.to_owned())
        }
    };
    let id = state.create_tag(&name, group.as_deref())?;
    let t = &state.tags[&id];
    Ok(Reply::with_status(
        201,
        json!({ "data": tag_resource(ctx, t), "links": { "self": ctx.url(&format!("/api/tags/{id}")) } }),
    ))
}

/// `PATCH /api/tags/{id}`: 204, name only.
pub fn update_tag(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    let (_, attrs) = ctx.resource_for_update("tag")?;
    let name = required_name(attrs, &["name"])?;
    find_tag(state, ctx.id())?;
    if let Some(t) = state.tags.get_mut(ctx.id()) {
        t.name = name;
    }
    Ok(Reply::no_content())
}

/// `DELETE /api/tags/{id}`: also drops its links.
pub fn delete_tag(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    state
        .tags
        .remove(ctx.id())
        .ok_or_else(|| ApiError::not_found("tag", ctx.id()))?;
    Ok(Reply::no_content())
}

/// `GET /api/tags/{id}/relationships/{lists|segments}`.
pub fn get_tagged(ctx: &RequestCtx, state: &State, kind: Taggable) -> HandlerResult {
    let t = find_tag(state, ctx.id())?;
    let seq_of = |id: &String| match kind {
        Taggable::List => state.lists.get(id).map_or(0, |l| l.seq),
        Taggable::Segment => state.segments.get(id).map_or(0, |s| s.seq),
    };
    let ids = match kind {
        Taggable::List => &t.lists,
        Taggable::Segment => &t.segments,
    };
    let ordered = in_order(ids.iter(), |id| seq_of(id));
    let data: Vec<Value> = ordered
        .iter()
        .map(|id| json!({ "type": kind.kind(), "id": id }))
        .collect();
    Ok(Reply::ok(
        json!({ "data": data, "links": { "self": ctx.self_link() } }),
    ))
}

/// `POST /api/tags/{id}/relationships/{lists|segments}`.
pub fn tag(ctx: &RequestCtx, state: &mut State, kind: Taggable) -> HandlerResult {
    find_tag(state, ctx.id())?;
    let ids = ctx.identifiers(kind.kind(), usize::MAX)?;
    state.tag_resources(ctx.id(), kind, &ids)?;
    Ok(Reply::no_content())
}

/// `DELETE /api/tags/{id}/relationships/{lists|segments}`.
pub fn untag(ctx: &RequestCtx, state: &mut State, kind: Taggable) -> HandlerResult {
    find_tag(state, ctx.id())?;
    let ids = ctx.identifiers(kind.kind(), usize::MAX)?;
    if let Some(t) = state.tags.get_mut(ctx.id()) {
        let set = match kind {
            Taggable::List => &mut t.lists,
            Taggable::Segment => &mut t.segments,
        };
        for id in ids {
            set.remove(&id);
        }
    }
    Ok(Reply::no_content())
}

/// `GET /api/tags/{id}/tag-group` and `/relationships/tag-group`.
pub fn get_group_of_tag(ctx: &RequestCtx, state: &State, id_only: bool) -> HandlerResult {
    let t = find_tag(state, ctx.id())?;
    let g = find_group(state, &t.group_id)?;
    let data = if id_only {
        json!({ "type": "tag-group", "id": g.id })
    } else {
        tag_group_resource(ctx, g)
    };
    Ok(Reply::ok(
        json!({ "data": data, "links": { "self": ctx.self_link() } }),
    ))
}

fn bool_term(value: &Literal, have: bool) -> bool {
    *value == Literal::Bool(have)
}

/// `GET /api/tag-groups`.
pub fn get_tag_groups(ctx: &RequestCtx, state: &State) -> HandlerResult {
    let terms = ctx.filter(&[
        ("name", NAME_OPS),
        ("exclusive", &["equals"]),
        ("default", &["equals"]),
    ])?;
    let mut groups: Vec<&TagGroup> = in_order(
        state.tag_groups.values().filter(|g| {
            terms.iter().all(|t| match t.field.as_str() {
                "name" => string_term_matches(t, Some(&g.name)),
                "exclusive" => bool_term(&t.value, g.exclusive),
                _ => bool_term(&t.value, g.default),
            })
        }),
        |g| g.seq,
    );
    sort_named(
        ctx,
        &mut groups,
        |g, f| {
            if f == "name" {
                g.name.clone()
            } else {
                g.id.clone()
            }
        },
        &["id", "name"],
    )?;
    let (page, links) = paginate(ctx, &groups, TAG_GROUPS_PAGE_MAX, TAG_GROUPS_PAGE_MAX)?;
    let data: Vec<Value> = page.iter().map(|g| tag_group_resource(ctx, g)).collect();
    Ok(Reply::ok(json!({ "data": data, "links": links })))
}

/// `GET /api/tag-groups/{id}`.
pub fn get_tag_group(ctx: &RequestCtx, state: &State) -> HandlerResult {
    let g = find_group(state, ctx.id())?;
    Ok(Reply::ok(
        json!({ "data": tag_group_resource(ctx, g), "links": { "self": ctx.self_link() } }),
    ))
}

/// `POST /api/tag-groups`.
pub fn create_tag_group(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    let (_, attrs) = ctx.resource("tag-group")?;
    let name = required_name(attrs, &["name", "exclusive", "default"])?;
    let exclusive = match attrs.get("exclusive") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid(
                "/data/attributes/exclusive",
                "'exclusive' must be a boolean.",
            ));
        }
    };
    if attrs
        .get("default")
        .is_some_and(|d| d != &Value::Bool(false))
    {
        return Err(ApiError::invalid(
            "/data/attributes/default",
            "Only the account's own default tag group can be the default.",
        ));
    }
    let id = state.create_tag_group(&name, exclusive)?;
    let g = &state.tag_groups[&id];
    Ok(Reply::with_status(
        201,
        json!({ "data": tag_group_resource(ctx, g), "links": { "self": ctx.url(&format!("/api/tag-groups/{id}")) } }),
    ))
}

/// `PATCH /api/tag-groups/{id}`: 204, name only.
pub fn update_tag_group(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    let (_, attrs) = ctx.resource_for_update("tag-group")?;
    let name = required_name(attrs, &["name", "return_fields"])?;
    find_group(state, ctx.id())?;
    if let Some(g) = state.tag_groups.get_mut(ctx.id()) {
        g.name = name;
    }
    Ok(Reply::no_content())
}

/// `DELETE /api/tag-groups/{id}`: deletes its tags too; the default group is protected.
pub fn delete_tag_group(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    let g = find_group(state, ctx.id())?;
    if g.default {
        return Err(ApiError::bad_request(
            "The default tag group cannot be deleted.",
        ));
    }
    let id = g.id.clone();
    state.tags.retain(|_, t| t.group_id != id);
    state.tag_groups.remove(&id);
    Ok(Reply::no_content())
}

/// `GET /api/tag-groups/{id}/tags` and `/relationships/tags`.
pub fn get_tags_of_group(ctx: &RequestCtx, state: &State, ids_only: bool) -> HandlerResult {
    let g = find_group(state, ctx.id())?;
    let tags = in_order(state.tags.values().filter(|t| t.group_id == g.id), |t| {
        t.seq
    });
    let data: Vec<Value> = if ids_only {
        tags.iter()
            .map(|t| json!({ "type": "tag", "id": t.id }))
            .collect()
    } else {
        tags.iter().map(|t| tag_resource(ctx, t)).collect()
    };
    Ok(Reply::ok(
        json!({ "data": data, "links": { "self": ctx.self_link() } }),
    ))
}
