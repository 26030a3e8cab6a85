//! Profile bulk import jobs: accepted at once (202), processed later by [`process_job`].

use serde_json::{Map, Value, json};

use super::lists::{list_resource, string_term_matches};
use super::profiles::{
    apply_attributes, profile_resource, the_profile_matching, validate_attributes,
};
use crate::jsonapi::{ApiError, HandlerResult, Reply, RequestCtx, paginate, relationship};
use crate::state::{BulkJob, ImportErrorRecord, PROFILE_IDENTIFIERS, State, in_order, timestamp};
use klaviyo_spec::limits::PROFILES_PAGE_MAX;

/// Profiles accepted by one job.
pub const MAX_PROFILES_PER_JOB: usize = klaviyo_spec::limits::BULK_IMPORT_MAX_PROFILES;

/// The JSON:API resource for a job.
pub fn job_resource(ctx: &RequestCtx, j: &BulkJob) -> Value {
    let mut lists = relationship(ctx, "profile-bulk-import-jobs", &j.id, "lists");
    lists["data"] = Value::Array(
        j.list_ids
            .iter()
            .map(|id| json!({"type": "list", "id": id}))
            .collect(),
    );
    json!({
        "type": "profile-bulk-import-job",
        "id": j.id,
        "attributes": {
            "status": j.status,
            "created_at": j.created_at,
            "total_count": j.total_count,
            "completed_count": j.completed_count,
            "failed_count": j.failed_count,
            "completed_at": j.completed_at,
            "expires_at": j.expires_at,
            "started_at": j.started_at,
        },
        "relationships": {
            "lists": lists,
            "profiles": relationship(ctx, "profile-bulk-import-jobs", &j.id, "profiles"),
            "import-errors": { "links": { "related": ctx.url(&format!("/api/profile-bulk-import-jobs/{}/import-errors", j.id)) } },
        },
        "links": { "self": ctx.url(&format!("/api/profile-bulk-import-jobs/{}", j.id)) },
    })
}

fn find<'a>(state: &'a State, id: &str) -> Result<&'a BulkJob, ApiError> {
    super::found(&state.jobs, "profile-bulk-import-job", id)
}

/// `POST /api/profile-bulk-import-jobs`.
pub fn create_job(ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    let (data, attrs) = ctx.resource("profile-bulk-import-job")?;
    let rows = attrs
        .get("profiles")
        .and_then(|p| p.get("data"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            ApiError::invalid(
                "/data/attributes/profiles/data",
                "'profiles.data' must be an array of profiles.",
            )
        })?;
    if rows.is_empty() || rows.len() > MAX_PROFILES_PER_JOB {
        return Err(ApiError::invalid(
            "/data/attributes/profiles/data",
            format!("A job must hold between 1 and {MAX_PROFILES_PER_JOB} profiles."),
        ));
    }
    let mut list_ids = Vec::new();
    if let Some(lists) = data.get("relationships").and_then(|r| r.get("lists")) {
        let items = lists.get("data").and_then(Value::as_array).ok_or_else(|| {
            ApiError::invalid("/data/relationships/lists/data", "'data' must be an array.")
        })?;
        for (i, item) in items.iter().enumerate() {
            let id = item
                .get("id")
                .and_then(Value::as_str)
                .filter(|_| item.get("type").and_then(Value::as_str) == Some("list"));
            match id {
                Some(id) if state.lists.contains_key(id) => list_ids.push(id.to_owned()),
                _ => {
                    return Err(ApiError::invalid(
                        format!("/data/relationships/lists/data/{i}"),
                        "Not an existing list.",
                    ));
                }
            }
        }
    }
    let id = state.new_job_id();
    let now = timestamp();
    let seq = state.next_job_seq();
    let job = BulkJob {
        seq,
        id: id.clone(),
        status: "queued".into(),
        created_at: now,
        started_at: None,
        completed_at: None,
        expires_at: None,
        total_count: rows.len() as u64,
        completed_count: 0,
        failed_count: 0,
        list_ids,
        profile_ids: Vec::new(),
        errors: Vec::new(),
        pending: rows.clone(),
    };
    let body = json!({ "data": job_resource(ctx, &job), "links": { "self": ctx.url(&format!("/api/profile-bulk-import-jobs/{id}")) } });
    state.jobs.insert(id.clone(), job);
    let mut reply = Reply::with_status(202, body);
    reply.start_job = Some(id);
    Ok(reply)
}

/// Moves a queued job to `processing`.
pub fn start_job(state: &mut State, id: &str) {
    if let Some(job) = state.jobs.get_mut(id).filter(|j| j.status == "queued") {
        job.status = "processing".into();
        job.started_at = Some(timestamp());
    }
}

fn row_error(state: &mut State, index: usize, row: &Value, err: &ApiError) -> ImportErrorRecord {
    let pointer = match &err.source {
        Some(crate::jsonapi::ErrorSource::Pointer(p)) => p.clone(),
        _ => "/data".into(),
    };
    ImportErrorRecord {
        id: state.uuid(),
        code: err.code.to_owned(),
        title: err.title.to_owned(),
        detail: err.detail.clone(),
        pointer,
        index,
        original_payload: row.clone(),
    }
}

/// Imports every pending row of a job and marks it complete. Nulls never clear fields here.
pub fn process_job(state: &mut State, id: &str) {
    let Some(job) = state.jobs.get_mut(id) else {
        return;
    };
    let rows = std::mem::take(&mut job.pending);
    let list_ids = job.list_ids.clone();
    let mut errors = Vec::new();
    let mut imported = Vec::new();
    for (at, row) in rows.iter().enumerate() {
        match import_row(state, row) {
            Ok(profile_id) => imported.push(profile_id),
            Err(err) => errors.push(row_error(state, at, row, &err)),
        }
    }
    for list in &list_ids {
        state.add_members(list, &imported);
    }
    if let Some(job) = state.jobs.get_mut(id) {
        job.completed_count = imported.len() as u64;
        job.failed_count = errors.len() as u64;
        // A set, not `Vec::contains`: a 10,000-profile job made that 50 million comparisons.
        let mut listed: std::collections::HashSet<String> =
            job.profile_ids.iter().cloned().collect();
        for p in imported {
            if listed.insert(p.clone()) {
                job.profile_ids.push(p);
            }
        }
        job.errors = errors;
        job.status = "complete".into();
        let now = timestamp();
        if job.started_at.is_none() {
            job.started_at = Some(now.clone());
        }
        job.completed_at = Some(now);
        job.expires_at = Some(
            (chrono::Utc::now() + chrono::Duration::days(7))
                .format("%Y-%m-%dT%H:%M:%S+00:00")
                .to_string(),
        );
    }
}

fn import_row(state: &mut State, row: &Value) -> Result<String, ApiError> {
    if row.get("type").and_then(Value::as_str) != Some("profile") {
        return Err(ApiError::invalid("/data/type", "Expected type 'profile'."));
    }
    let empty = Map::new();
    let attrs = match row.get("attributes") {
        Some(Value::Object(a)) => a,
        None => &empty,
        Some(_) => {
            return Err(ApiError::invalid(
                "/data/attributes",
                "'attributes' must be an object.",
            ));
        }
    };
    validate_attributes(attrs, true)?;
    let explicit = row.get("id").and_then(Value::as_str);
    let target = match explicit {
        Some(id) if state.profiles.contains_key(id) => Some(id.to_owned()),
        Some(id) => return Err(ApiError::not_found("profile", id)),
        None => the_profile_matching(state, attrs)?,
    };
    match target {
        Some(id) => {
            if let Some(other) = state.profiles_matching(attrs, Some(&id)).first() {
                return Err(ApiError::duplicate_profile(other));
            }
            let mut p = state.profiles[&id].clone();
            apply_attributes(&mut p, attrs, false);
            state.put_profile(p);
            Ok(id)
        }
        None => {
            let has_identifier = PROFILE_IDENTIFIERS
                .iter()
                .any(|k| attrs.get(*k).and_then(Value::as_str).is_some());
            if !has_identifier {
                return Err(ApiError::invalid(
                    "/data/attributes",
                    "One or more identifiers is required.",
                ));
            }
            let mut clean = attrs.clone();
            clean.remove("_kx");
            Ok(state.create_profile(clean))
        }
    }
}

/// `GET /api/profile-bulk-import-jobs`.
pub fn get_jobs(ctx: &RequestCtx, state: &State) -> HandlerResult {
    let terms = ctx.filter(&[("status", &["equals", "any"])])?;
    let mut jobs: Vec<&BulkJob> = in_order(
        state.jobs.values().filter(|j| {
            terms
                .iter()
                .all(|t| string_term_matches(t, Some(&j.status)))
        }),
        |j| j.seq,
    );
    match ctx.query_value("sort") {
        None | Some("created_at") => {}
        Some("-created_at") => jobs.reverse(),
        Some(other) => {
            return Err(ApiError::invalid_parameter(
                "sort",
                format!("'{other}' is not a valid sort."),
            ));
        }
    }
    let (page, links) = paginate(ctx, &jobs, 20, PROFILES_PAGE_MAX)?;
    let data: Vec<Value> = page.iter().map(|j| job_resource(ctx, j)).collect();
    Ok(Reply::ok(json!({ "data": data, "links": links })))
}

/// `GET /api/profile-bulk-import-jobs/{id}`.
pub fn get_job(ctx: &RequestCtx, state: &State) -> HandlerResult {
    let include_lists = ctx.includes(&["lists"])?.iter().any(|i| i == "lists");
    let j = find(state, ctx.id())?;
    let mut body = json!({ "data": job_resource(ctx, j), "links": { "self": ctx.self_link() } });
    if include_lists {
        let included: Vec<Value> = j
            .list_ids
            .iter()
            .filter_map(|id| state.lists.get(id))
            .map(|l| list_resource(ctx, state, l, false, false))
            .collect();
        body["included"] = Value::Array(included);
    }
    Ok(Reply::ok(body))
}

/// `GET /api/profile-bulk-import-jobs/{id}/profiles` and `/relationships/profiles`.
pub fn get_job_profiles(ctx: &RequestCtx, state: &State, ids_only: bool) -> HandlerResult {
    let j = find(state, ctx.id())?;
    let (page, links) = paginate(ctx, &j.profile_ids, 20, PROFILES_PAGE_MAX)?;
    let data: Vec<Value> = page
        .iter()
        .filter_map(|id| state.profiles.get(id))
        .map(|p| {
            if ids_only {
                json!({"type": "profile", "id": p.id})
            } else {
                profile_resource(ctx, p, None)
            }
        })
        .collect();
    Ok(Reply::ok(json!({ "data": data, "links": links })))
}

/// `GET /api/profile-bulk-import-jobs/{id}/lists` and `/relationships/lists`.
pub fn get_job_lists(ctx: &RequestCtx, state: &State, ids_only: bool) -> HandlerResult {
    let j = find(state, ctx.id())?;
    let data: Vec<Value> = j
        .list_ids
        .iter()
        .filter_map(|id| state.lists.get(id))
        .map(|l| {
            if ids_only {
                json!({"type": "list", "id": l.id})
            } else {
                list_resource(ctx, state, l, false, false)
            }
        })
        .collect();
    Ok(Reply::ok(
        json!({ "data": data, "links": { "self": ctx.self_link() } }),
    ))
}

/// `GET /api/profile-bulk-import-jobs/{id}/import-errors`, each error naming its profile as the
/// emulator's [`crate::ImportErrorShape`] mode says.
pub fn get_import_errors(ctx: &RequestCtx, state: &State) -> HandlerResult {
    let j = find(state, ctx.id())?;
    let (page, links) = paginate(ctx, &j.errors, 20, PROFILES_PAGE_MAX)?;
    let shape = state.modes.import_errors;
    let data: Vec<Value> = page
        .iter()
        .map(|e| {
            let (pointer, original_payload) =
                shape.render(e.index, &e.pointer, &e.original_payload);
            json!({
                "type": "import-error",
                "id": e.id,
                "attributes": {
                    "code": e.code,
                    "title": e.title,
                    "detail": e.detail,
                    "source": { "pointer": pointer },
                    "original_payload": original_payload,
                },
            })
        })
        .collect();
    Ok(Reply::ok(json!({ "data": data, "links": links })))
}
