//! Lists, their members and their tags.

use serde_json::{Map, Value, json};

use super::profiles::profile_resource;
use super::tags::tag_resource;
use crate::filter::{self, Term};
use crate::jsonapi::{
    ApiError, HandlerResult, Reply, RequestCtx, apply_fields, identifiers, paginate, relationship,
};
use crate::state::{List, State, Taggable, in_order, timestamp};
use klaviyo_spec::limits::{LISTS_PAGE_MAX, PROFILES_PAGE_MAX};

/// Profiles accepted by one add/remove call.
pub const MAX_PROFILES_PER_CALL: usize = klaviyo_spec::limits::LIST_MEMBERS_PER_CALL;
const OPT_IN: &[&str] = &["single_opt_in", "double_opt_in"];

/// The JSON:API resource for a list.
pub fn list_resource(
    ctx: &RequestCtx,
    state: &State,
    l: &List,
    with_tags: bool,
    count: bool,
) -> Value {
    let mut attrs = Map::new();
    attrs.insert("name".into(), Value::String(l.name.clone()));
    attrs.insert("created".into(), Value::String(l.created.clone()));
    attrs.insert("updated".into(), Value::String(l.updated.clone()));
    attrs.insert("opt_in_process".into(), json!(l.opt_in_process));
    if count {
        attrs.insert("profile_count".into(), json!(l.members.len()));
    }
    apply_fields(&mut attrs, ctx.fields("list").as_deref());
    let mut tags = relationship(ctx, "lists", &l.id, "tags");
    if with_tags {
        tags["data"] = identifiers("tag", &state.tags_of(Taggable::List, &l.id));
    }
    json!({
        "type": "list",
        "id": l.id,
        "attributes": attrs,
        "relationships": {
            "profiles": relationship(ctx, "lists", &l.id, "profiles"),
            "tags": tags,
            "flow-triggers": relationship(ctx, "lists", &l.id, "flow-triggers"),
        },
        "links": { "self": ctx.url(&format!("/api/lists/{}", l.id)) },
    })
}

/// Matches `created`/`updated`/`joined_group_at` comparisons.
pub fn date_term_matches(term: &Term, have: &str) -> bool {
    let (Some(have), Some(want)) = (
        filter::datetime_value(&filter::Literal::Str(have.to_owned())),
        filter::datetime_value(&term.value),
    ) else {
        return false;
    };
    match term.op.as_str() {
        "greater-than" => have > want,
        "greater-or-equal" => have >= want,
        "less-than" => have < want,
        "less-or-equal" => have <= want,
        _ => false,
    }
}

/// Matches `equals`/`any` on a string field, accepting the single and the list form.
pub fn string_term_matches(term: &Term, have: Option<&str>) -> bool {
    let wanted = filter::string_values(&term.value).unwrap_or_default();
    match term.op.as_str() {
        "equals" | "any" => have.is_some_and(|h| wanted.iter().any(|w| w == h)),
        "contains" => have.is_some_and(|h| wanted.iter().any(|w| h.contains(w.as_str()))),
        "starts-with" => have.is_some_and(|h| wanted.iter().any(|w| h.starts_with(w.as_str()))),
        "ends-with" => have.is_some_and(|h| wanted.iter().any(|w| h.ends_with(w.as_str()))),
        _ => false,
    }
}

/// Orders records by `sort=` (`created`, `id`, `name`, `updated`, `-` for descending).
pub fn sort_named<T>(
    ctx: &RequestCtx,
    items: &mut [T],
    key: impl Fn(&T, &str) -> String,
    allowed: &[&str],
) -> Result<(), ApiError> {
    let Some(sort) = ctx.query_value("sort") else {
        return Ok(());
    };
    let (desc, field) = sort.strip_prefix('-').map_or((false, sort), |k| (true, k));
    if !allowed.contains(&field) {
        return Err(ApiError::invalid_parameter(
            "sort",
            format!("'{sort}' is not a valid sort."),
        ));
    }
    items.sort_by_key(|i| key(i, field));
    if desc {
        items.reverse();
    }
    Ok(())
}

fn find<'a>(state: &'a State, id: &str) -> Result<&'a List, ApiError> {
    super::found(&state.lists, "list", id)
}

/// Resources plus `included` tags for the lists (or segments) that asked for them.
pub fn with_included_tags(
    ctx: &RequestCtx,
    state: &State,
    body: &mut Value,
    tag_ids: Vec<String>,
    include: bool,
) {
    if !include {
        return;
    }
    let mut seen = Vec::new();
    for id in tag_ids {
        if !seen.contains(&id) {
            seen.push(id);
        }
    }
    let included: Vec<Value> = seen
        .iter()
        .filter_map(|id| state.tags.get(id))
        .map(|t| tag_resource(ctx, t))
        .collect();
    body["included"] = Value::Array(included);
}

/// `GET /api/lists`.
pub fn get_lists(ctx: &RequestCtx, state: &State) -> HandlerResult {
    let terms = ctx.filter(&[
        ("name", &["any", "equals"]),
        ("id", &["any", "equals"]),
        ("created", &["greater-than"]),
        ("updated", &["greater-than"]),
    ])?;
    let include_tags = ctx
        .includes(&["tags", "flow-triggers"])?
        .iter()
        .any(|i| i == "tags");
    let mut lists: Vec<&List> = in_order(
        state.lists.values().filter(|l| {
            terms.iter().all(|t| match t.field.as_str() {
                "name" => string_term_matches(t, Some(&l.name)),
                "id" => string_term_matches(t, Some(&l.id)),
                "created" => date_term_matches(t, &l.created),
                _ => date_term_matches(t, &l.updated),
            })
        }),
        |l| l.seq,
    );
    sort_named(
        ctx,
        &mut lists,
        |l, f| match f {
            "id" => l.id.clone(),
            "name" => l.name.clone(),
            "updated" => l.updated.clone(),
            _ => format!("{:020}", l.seq),
        },
        &["created", "id", "name", "updated"],
    )?;
    let (page, links) = paginate(ctx, &lists, LISTS_PAGE_MAX, LISTS_PAGE_MAX)?;
    let data: Vec<Value> = page
        .iter()
        .map(|l| list_resource(ctx, state, l, include_tags, false))
        .collect();
    let mut body = json!({ "data": data, "links": links });
    let tag_ids = page
        .iter()
        .flat_map(|l| state.tags_of(Taggable::List, &l.id))
        .collect();
    with_included_tags(ctx, state, &mut body, tag_ids, include_tags);
    Ok(Reply::ok(body))
}

/// `GET /api/lists/{id}`.
pub fn get_list(ctx: &RequestCtx, state: &State) -> HandlerResult {
    let include_tags = ctx
        .includes(&["tags", "flow-triggers"])?
        .iter()
        .any(|i| i == "tags");
    let count = !ctx
        .additional_fields("list", &["profile_count"])?
        .is_empty();
    let l = find(state, ctx.id())?;
    let mut body = json!({ "data": list_resource(ctx, state, l, include_tags, count), "links": { "self": ctx.self_link() } });
    with_included_tags(
        ctx,
        state,
        &mut body,
        state.tags_of(Taggable::List, &l.id),
        include_tags,
    );
    Ok(Reply::ok(body))
}

fn check_list_attributes(attrs: &Map<String, Value>, name_required: bool) -> Result<(), ApiError> {
    for (key, value) in attrs {
        let pointer = format!("/data/attributes/{key}");
        match key.as_str() {
            // The spec allows null in an update (as SDKs send unset fields): no change.
            "name" if value.is_null() && !name_required => {}
            "name" => {
                if value.as_str().is_none_or(|s| s.trim().is_empty()) {
                    return Err(ApiError::invalid(
                        pointer,
                        "'name' must be a non-empty string.",
                    ));
                }
            }
            "opt_in_process" => {
                if !(value.is_null() || value.as_str().is_some_and(|v| OPT_IN.contains(&v))) {
                    return Err(ApiError::invalid(
                        pointer,
                        "'opt_in_process' must be 'single_opt_in' or 'double_opt_in'.",
                    ));
                }
            }
            _ => {
                return Err(ApiError::invalid(
                    pointer,
                    format!("'{key}' is not a valid field for the resource 'list'."),
                ));
            }
        }
    }
    if name_required && !attrs.contains_key("name") {
        return Err(ApiError::invalid(
            "/data/attributes/name",
            "'name' is a required field.",
        ));
    }
    Ok(())
}

/// `POST /api/lists`.
pub fn create_list(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    let (_, attrs) = ctx.resource("list")?;
    check_list_attributes(attrs, true)?;
    let name = attrs
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let id = state.create_list(name, attrs.get("opt_in_process").and_then(Value::as_str));
    let l = &state.lists[&id];
    Ok(Reply::with_status(
        201,
        json!({ "data": list_resource(ctx, state, l, false, false), "links": { "self": ctx.url(&format!("/api/lists/{id}")) } }),
    ))
}

/// `PATCH /api/lists/{id}`.
pub fn update_list(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    let (_, attrs) = ctx.resource_for_update("list")?;
    check_list_attributes(attrs, false)?;
    find(state, ctx.id())?;
    if let Some(l) = state.lists.get_mut(ctx.id()) {
        if let Some(name) = attrs.get("name").and_then(Value::as_str) {
            l.name = name.to_owned();
        }
        if let Some(opt_in) = attrs.get("opt_in_process") {
            l.opt_in_process = opt_in.as_str().map(str::to_owned);
        }
        l.updated = timestamp();
    }
    let l = find(state, ctx.id())?;
    Ok(Reply::ok(
        json!({ "data": list_resource(ctx, state, l, false, false), "links": { "self": ctx.self_link() } }),
    ))
}

/// `DELETE /api/lists/{id}`.
pub fn delete_list(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    if state.delete_list(ctx.id()) {
        Ok(Reply::no_content())
    } else {
        Err(ApiError::not_found("list", ctx.id()))
    }
}

/// Members of a group (list or segment) as `(profile id, joined_group_at)` after member filters.
pub fn member_page(
    ctx: &RequestCtx,
    state: &State,
    members: Vec<(String, String)>,
    extra_filters: &[(&str, &[&str])],
    ids_only: bool,
) -> HandlerResult {
    let mut allowed: Vec<(&str, &[&str])> = vec![
        ("email", &["any", "equals"]),
        ("phone_number", &["any", "equals"]),
        ("push_token", &["any", "equals"]),
        ("_kx", &["equals"]),
        (
            "joined_group_at",
            &[
                "greater-than",
                "greater-or-equal",
                "less-than",
                "less-or-equal",
            ],
        ),
    ];
    allowed.extend_from_slice(extra_filters);
    let terms = ctx.filter(&allowed)?;
    // An `any`/`equals` term's values, parsed once per request rather than once per member:
    // a list of a million members is filtered by up to 100 identifiers a request.
    let value_sets: Vec<Option<std::collections::HashSet<String>>> = terms
        .iter()
        .map(|t| {
            matches!(t.op.as_str(), "any" | "equals")
                .then(|| filter::string_values(&t.value).unwrap_or_default())
                .map(|values| values.into_iter().collect())
        })
        .collect();
    let matches =
        |t: &Term, set: &Option<std::collections::HashSet<String>>, have: Option<&str>| match set {
            Some(set) => have.is_some_and(|h| set.contains(h)),
            None => string_term_matches(t, have),
        };
    let mut members: Vec<(String, String)> = members
        .into_iter()
        .filter(|(id, joined)| {
            let p = state.profiles.get(id);
            terms
                .iter()
                .zip(&value_sets)
                .all(|(t, set)| match t.field.as_str() {
                    "joined_group_at" => date_term_matches(t, joined),
                    "profile_id" => matches(t, set, Some(id)),
                    "email" | "phone_number" => {
                        matches(t, set, p.and_then(|p| p.get_str(&t.field)))
                    }
                    _ => false,
                })
        })
        .collect();
    match ctx.query_value("sort") {
        None | Some("joined_group_at") => {}
        Some("-joined_group_at") => members.reverse(),
        Some(other) => {
            return Err(ApiError::invalid_parameter(
                "sort",
                format!("'{other}' is not a valid sort."),
            ));
        }
    }
    let (page, links) = paginate(ctx, &members, 20, PROFILES_PAGE_MAX)?;
    let data: Vec<Value> = page
        .iter()
        .filter_map(|(id, joined)| {
            let p = state.profiles.get(id)?;
            Some(if ids_only {
                json!({ "type": "profile", "id": id })
            } else {
                profile_resource(
                    ctx,
                    p,
                    Some(("joined_group_at", Value::String(joined.clone()))),
                )
            })
        })
        .collect();
    Ok(Reply::ok(json!({ "data": data, "links": links })))
}

/// `GET /api/lists/{id}/profiles` and `/relationships/profiles`.
pub fn get_list_profiles(ctx: &RequestCtx, state: &State, ids_only: bool) -> HandlerResult {
    let l = find(state, ctx.id())?;
    let mut members: Vec<(&String, &crate::state::Member)> = l.members.iter().collect();
    members.sort_by_key(|(_, m)| m.seq);
    let members = members
        .into_iter()
        .map(|(id, m)| (id.clone(), m.joined_group_at.clone()))
        .collect();
    member_page(ctx, state, members, &[], ids_only)
}

fn profile_ids_in_body(ctx: &RequestCtx, state: &State) -> Result<Vec<String>, ApiError> {
    let ids = ctx.identifiers("profile", MAX_PROFILES_PER_CALL)?;
    for (i, id) in ids.iter().enumerate() {
        if !state.profiles.contains_key(id) {
            return Err(ApiError::invalid(
                format!("/data/{i}/id"),
                format!("A profile with id {id} does not exist."),
            ));
        }
    }
    Ok(ids)
}

/// `POST /api/lists/{id}/relationships/profiles`.
pub fn add_profiles(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    find(state, ctx.id())?;
    let ids = profile_ids_in_body(ctx, state)?;
    state.add_members(ctx.id(), &ids);
    Ok(Reply::no_content())
}

/// `DELETE /api/lists/{id}/relationships/profiles`.
pub fn remove_profiles(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    find(state, ctx.id())?;
    let ids = profile_ids_in_body(ctx, state)?;
    if let Some(l) = state.lists.get_mut(ctx.id()) {
        for id in ids {
            l.members.remove(&id);
        }
    }
    Ok(Reply::no_content())
}

/// `GET /api/{lists|segments}/{id}/tags` and `/relationships/tags`.
pub fn get_tags_for(
    ctx: &RequestCtx,
    state: &State,
    kind: Taggable,
    ids_only: bool,
) -> HandlerResult {
    let exists = match kind {
        Taggable::List => state.lists.contains_key(ctx.id()),
        Taggable::Segment => state.segments.contains_key(ctx.id()),
    };
    if !exists {
        return Err(ApiError::not_found(kind.kind(), ctx.id()));
    }
    let tag_ids = state.tags_of(kind, ctx.id());
    let data: Vec<Value> = if ids_only {
        tag_ids
            .iter()
            .map(|id| json!({ "type": "tag", "id": id }))
            .collect()
    } else {
        tag_ids
            .iter()
            .filter_map(|id| state.tags.get(id))
            .map(|t| tag_resource(ctx, t))
            .collect()
    };
    Ok(Reply::ok(
        json!({ "data": data, "links": { "self": ctx.self_link() } }),
    ))
}
