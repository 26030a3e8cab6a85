//! JSON:API plumbing shared by the handlers: the request context (query, body, base URL),
//! error objects, opaque cursors, paging and sparse fieldsets.

use serde_json::{Map, Value, json};

use super::filter::{self, Term};

/// A Klaviyo-shaped error response.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Machine code, e.g. `invalid`, `not_found`, `duplicate_profile`.
    pub code: &'static str,
    /// Short title, e.g. `Invalid input.`.
    pub title: &'static str,
    /// Human detail.
    pub detail: String,
    /// `source.pointer` (body) or `source.parameter` (query).
    pub source: Option<ErrorSource>,
    /// Extra `meta`, e.g. `duplicate_profile_id` (boxed: rare, and keeps `Result`s small).
    pub meta: Option<Box<Map<String, Value>>>,
    /// Extra headers such as `Retry-After`.
    pub retry_after: Option<u64>,
}

/// Where an error came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorSource {
    /// A JSON pointer into the request body.
    Pointer(String),
    /// A query parameter name.
    Parameter(String),
}

impl ApiError {
    fn new(
        status: u16,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code,
            title,
            detail: detail.into(),
            source: None,
            meta: None,
            retry_after: None,
        }
    }

    /// 400 about the body at `pointer`.
    pub fn invalid(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        let mut e = ApiError::new(400, "invalid", "Invalid input.", detail);
        e.source = Some(ErrorSource::Pointer(pointer.into()));
        e
    }

    /// 400 about the query parameter `parameter`.
    pub fn invalid_parameter(parameter: impl Into<String>, detail: impl Into<String>) -> Self {
        let mut e = ApiError::new(400, "invalid", "Invalid input.", detail);
        e.source = Some(ErrorSource::Parameter(parameter.into()));
        e
    }

    /// 400 without a source.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        ApiError::new(400, "invalid", "Invalid input.", detail)
    }

    /// 404 for an unknown resource.
    pub fn not_found(kind: &str, id: &str) -> Self {
        ApiError::new(
            404,
            "not_found",
            "Not found.",
            format!("A {kind} with id {id} does not exist."),
        )
    }

    /// 404 for a path that is no endpoint.
    pub fn no_route(path: &str) -> Self {
        ApiError::new(
            404,
            "not_found",
            "Not found.",
            format!("No endpoint at {path}."),
        )
    }

    /// 405 for a known path with the wrong method.
    pub fn method_not_allowed(method: &str) -> Self {
        ApiError::new(
            405,
            "method_not_allowed",
            "Method not allowed.",
            format!("Method \"{method}\" not allowed."),
        )
    }

    /// 403 for a key that lacks a scope the operation needs. Klaviyo's docs show the code and
    /// title; whether its detail names the scope is not published, so klsync never relies on it
    /// (it names the scopes from its own table).
    pub fn permission_denied(missing: &[&str]) -> Self {
        ApiError::new(
            403,
            "permission_denied",
            "You do not have permission to perform this action.",
            format!(
                "This API key is missing the required scope(s): {}.",
                missing.join(", ")
            ),
        )
    }

    /// 401 for a missing or wrong API key.
    pub fn unauthorized() -> Self {
        ApiError::new(
            401,
            "not_authenticated",
            "Authentication credentials were not provided.",
            "Missing or invalid private key.",
        )
    }

    /// 409 with `meta.duplicate_profile_id`.
    pub fn duplicate_profile(existing_id: &str) -> Self {
        let mut e = ApiError::new(
            409,
            "duplicate_profile",
            "Conflict.",
            "A profile already exists with one of these identifiers.",
        );
        e.source = Some(ErrorSource::Pointer("/data/attributes".into()));
        let mut meta = Map::new();
        meta.insert(
            "duplicate_profile_id".into(),
            Value::String(existing_id.into()),
        );
        e.meta = Some(Box::new(meta));
        e
    }

    /// 413 for an oversized body.
    pub fn too_large(limit: &str) -> Self {
        ApiError::new(
            413,
            "request_too_large",
            "Request entity too large.",
            format!("The request body exceeds the maximum size of {limit}."),
        )
    }

    /// 415 for a body that is not JSON:API.
    pub fn unsupported_media_type(got: &str) -> Self {
        ApiError::new(
            415,
            "unsupported_media_type",
            "Unsupported media type.",
            format!("Unsupported media type \"{got}\" in request."),
        )
    }

    /// 429 with `Retry-After`.
    pub fn throttled(retry_after: u64) -> Self {
        let mut e = ApiError::new(
            429,
            "throttled",
            "Request was throttled.",
            format!("Request was throttled. Expected available in {retry_after} seconds."),
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// 500.
    pub fn server_error() -> Self {
        ApiError::new(
            500,
            "error",
            "A server error occurred.",
            "A server error occurred.",
        )
    }

    /// The JSON body, with a fresh error id.
    pub fn body(&self, error_id: String) -> Value {
        let mut error = json!({
            "id": error_id,
            "status": self.status,
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
        });
        if let Some(source) = &self.source {
            error["source"] = match source {
                ErrorSource::Pointer(p) => json!({ "pointer": p }),
                ErrorSource::Parameter(p) => json!({ "parameter": p }),
            };
        }
        error["links"] = json!({});
        error["meta"] = Value::Object(self.meta.as_deref().cloned().unwrap_or_default());
        json!({ "errors": [error] })
    }
}

/// What a handler returns on success.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body; `None` for 204.
    pub body: Option<Value>,
    /// A bulk import job to start processing once the response is decided.
    pub start_job: Option<String>,
}

impl Reply {
    /// 200 with a body.
    pub fn ok(body: Value) -> Self {
        Reply::with_status(200, body)
    }

    /// `status` with a body.
    pub fn with_status(status: u16, body: Value) -> Self {
        Reply {
            status,
            body: Some(body),
            start_job: None,
        }
    }

    /// 204, no body.
    pub fn no_content() -> Self {
        Reply {
            status: 204,
            body: None,
            start_job: None,
        }
    }
}

/// Handler result.
pub type HandlerResult = Result<Reply, ApiError>;

/// Everything a handler needs from the HTTP request.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// `http://host:port`, as the client addressed us.
    pub base: String,
    /// The request path (no trailing slash).
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Values of the `{param}` path segments.
    pub params: Vec<String>,
    /// Parsed JSON body, if any.
    pub body: Option<Value>,
}

impl RequestCtx {
    /// The first path parameter.
    pub fn id(&self) -> &str {
        self.params.first().map_or("", String::as_str)
    }

    /// A query parameter's value.
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A comma-separated list parameter such as `include` or `fields[list]`.
    pub fn query_list(&self, name: &str) -> Option<Vec<String>> {
        self.query_value(name).map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }

    /// `include=` values, checked against what the endpoint allows.
    pub fn includes(&self, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
        let values = self.query_list("include").unwrap_or_default();
        for value in &values {
            if !allowed.contains(&value.as_str()) {
                return Err(ApiError::invalid_parameter(
                    "include",
                    format!("'{value}' is not an allowed include parameter for this resource."),
                ));
            }
        }
        Ok(values)
    }

    /// `additional-fields[kind]=` values, checked against what the endpoint allows.
    pub fn additional_fields(&self, kind: &str, allowed: &[&str]) -> Result<Vec<String>, ApiError> {
        let name = format!("additional-fields[{kind}]");
        let values = self.query_list(&name).unwrap_or_default();
        for value in &values {
            if !allowed.contains(&value.as_str()) {
                return Err(ApiError::invalid_parameter(
                    name.clone(),
                    format!("'{value}' is not a valid field for the resource '{kind}'."),
                ));
            }
        }
        Ok(values)
    }

    /// The parsed `filter=`, with each term checked against `allowed` (field, operators).
    pub fn filter(&self, allowed: &[(&str, &[&str])]) -> Result<Vec<Term>, ApiError> {
        let Some(raw) = self.query_value("filter") else {
            return Ok(Vec::new());
        };
        let terms =
            filter::parse(raw).map_err(|e| ApiError::invalid_parameter("filter", e.to_string()))?;
        for term in &terms {
            let ok = allowed
                .iter()
                .any(|(field, ops)| *field == term.field && ops.contains(&term.op.as_str()));
            if !ok {
                return Err(ApiError::invalid_parameter(
                    "filter",
                    format!(
                        "'{}' is not a valid operator for field '{}'.",
                        term.op, term.field
                    ),
                ));
            }
        }
        Ok(terms)
    }

    /// `page[size]` within `1..=max`, else `default`.
    pub fn page_size(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.query_value("page[size]") {
            None => Ok(default),
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::invalid_parameter(
                    "page[size]",
                    format!("Page size must be an integer between 1 and {max}."),
                )),
            },
        }
    }

    /// The offset encoded in `page[cursor]`, 0 without one.
    pub fn page_offset(&self) -> Result<usize, ApiError> {
        match self.query_value("page[cursor]") {
            None | Some("") => Ok(0),
            Some(raw) => decode_cursor(raw)
                .ok_or_else(|| ApiError::invalid_parameter("page[cursor]", "Invalid page cursor.")),
        }
    }

    /// `fields[kind]`, the sparse fieldset for `kind`.
    pub fn fields(&self, kind: &str) -> Option<Vec<String>> {
        self.query_list(&format!("fields[{kind}]"))
    }

    /// The absolute URL of this request with its query as received.
    pub fn self_link(&self) -> String {
        self.link_with_query(&self.query)
    }

    fn link_with_query(&self, pairs: &[(String, String)]) -> String {
        let mut url = format!("{}{}", self.base, self.path);
        if !pairs.is_empty() {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish();
            url.push('?');
            url.push_str(&query);
        }
        url
    }

    /// This request's URL with `page[cursor]` replaced by a cursor at `offset`.
    pub fn link_at(&self, offset: usize) -> String {
        let mut pairs: Vec<(String, String)> = self
            .query
            .iter()
            .filter(|(k, _)| k != "page[cursor]")
            .cloned()
            .collect();
        if offset > 0 {
            pairs.push(("page[cursor]".into(), encode_cursor(offset)));
        }
        self.link_with_query(&pairs)
    }

    /// An absolute URL for `path` (which starts with `/api/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The request body's `data` member, required.
    pub fn data(&self) -> Result<&Value, ApiError> {
        let body = self
            .body
            .as_ref()
            .ok_or_else(|| ApiError::invalid("/data", "A request body is required."))?;
        body.get("data")
            .ok_or_else(|| ApiError::invalid("/data", "'data' is a required field."))
    }

    /// `data` as a resource object of `kind`, with its `attributes` object.
    pub fn resource(&self, kind: &str) -> Result<(&Value, &Map<String, Value>), ApiError> {
        let data = self.data()?;
        if !data.is_object() {
            return Err(ApiError::invalid("/data", "'data' must be an object."));
        }
        match data.get("type").and_then(Value::as_str) {
            Some(t) if t == kind => {}
            Some(t) => {
                return Err(ApiError::invalid(
                    "/data/type",
                    format!("'{t}' is not a valid type; expected '{kind}'."),
                ));
            }
            None => {
                return Err(ApiError::invalid(
                    "/data/type",
                    "'type' is a required field.",
                ));
            }
        }
        let attributes = data
            .get("attributes")
            .ok_or_else(|| {
                ApiError::invalid("/data/attributes", "'attributes' is a required field.")
            })?
            .as_object()
            .ok_or_else(|| {
                ApiError::invalid("/data/attributes", "'attributes' must be an object.")
            })?;
        Ok((data, attributes))
    }

    /// Like [`RequestCtx::resource`], and `data.id` must equal the path id.
    pub fn resource_for_update(
        &self,
        kind: &str,
    ) -> Result<(&Value, &Map<String, Value>), ApiError> {
        let (data, attributes) = self.resource(kind)?;
        match data.get("id").and_then(Value::as_str) {
            Some(id) if id == self.id() => Ok((data, attributes)),
            Some(id) => Err(ApiError::invalid(
                "/data/id",
                format!("The id '{id}' in the body does not match the id in the path."),
            )),
            None => Err(ApiError::invalid("/data/id", "'id' is a required field.")),
        }
    }

    /// `data` as an array of `{type: kind, id}` identifiers, at most `max`.
    pub fn identifiers(&self, kind: &str, max: usize) -> Result<Vec<String>, ApiError> {
        let items = self
            .data()?
            .as_array()
            .ok_or_else(|| ApiError::invalid("/data", "'data' must be an array."))?;
        if items.len() > max {
            return Err(ApiError::invalid(
                "/data",
                format!("At most {max} items may be sent in one request."),
            ));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                match item.get("type").and_then(Value::as_str) {
                    Some(t) if t == kind => {}
                    _ => {
                        return Err(ApiError::invalid(
                            format!("/data/{i}/type"),
                            format!("Expected type '{kind}'."),
                        ));
                    }
                }
                item.get("id")
                    .and_then(Value::as_str)
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        ApiError::invalid(format!("/data/{i}/id"), "'id' is a required field.")
                    })
            })
            .collect()
    }
}

const CURSOR_PREFIX: &str = "emu1:";

/// Encodes a page offset as an opaque cursor.
pub fn encode_cursor(offset: usize) -> String {
    hex::encode(format!("{CURSOR_PREFIX}{offset}"))
}

/// Decodes a cursor made by [`encode_cursor`].
pub fn decode_cursor(cursor: &str) -> Option<usize> {
    let bytes = hex::decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix(CURSOR_PREFIX)?.parse().ok()
}

/// A page of `items` per `page[size]`/`page[cursor]`, and the collection `links`.
pub fn paginate<T: Clone>(
    ctx: &RequestCtx,
    items: &[T],
    default_size: usize,
    max_size: usize,
) -> Result<(Vec<T>, Value), ApiError> {
    let size = ctx.page_size(default_size, max_size)?;
    let offset = ctx.page_offset()?;
    let page: Vec<T> = items.iter().skip(offset).take(size).cloned().collect();
    let mut links = Map::new();
    links.insert("self".into(), Value::String(ctx.self_link()));
    if offset + size < items.len() {
        links.insert("next".into(), Value::String(ctx.link_at(offset + size)));
    }
    if offset > 0 {
        links.insert(
            "prev".into(),
            Value::String(ctx.link_at(offset.saturating_sub(size))),
        );
    }
    Ok((page, Value::Object(links)))
}

/// Keeps only the attributes named in a sparse fieldset (dotted names keep their top-level key).
pub fn apply_fields(attributes: &mut Map<String, Value>, fields: Option<&[String]>) {
    let Some(fields) = fields else { return };
    attributes.retain(|key, _| {
        fields
            .iter()
            .any(|f| f == key || f.split('.').next() == Some(key.as_str()))
    });
}

/// A relationship object with `self`/`related` links for `/api/{kind}/{id}/…/{rel}`.
pub fn relationship(ctx: &RequestCtx, kind: &str, id: &str, rel: &str) -> Value {
    json!({
        "links": {
            "self": ctx.url(&format!("/api/{kind}/{id}/relationships/{rel}")),
            "related": ctx.url(&format!("/api/{kind}/{id}/{rel}")),
        }
    })
}

/// `{type, id}` identifiers.
pub fn identifiers<'a>(kind: &str, ids: impl IntoIterator<Item = &'a String>) -> Value {
    Value::Array(
        ids.into_iter()
            .map(|id| json!({ "type": kind, "id": id }))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(query: &[(&str, &str)]) -> RequestCtx {
        RequestCtx {
            base: "http://127.0.0.1:9".into(),
            path: "/api/lists".into(),
            query: query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            params: Vec::new(),
            body: None,
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        for offset in [0, 1, 10, 12_345] {
            assert_eq!(decode_cursor(&encode_cursor(offset)), Some(offset));
        }
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor(&hex::encode("other:3")), None);
    }

    #[test]
    fn paginate_builds_absolute_next_and_prev_links() {
        let items: Vec<u32> = (0..25).collect();
        let (page, links) = paginate(&ctx(&[("page[size]", "10")]), &items, 10, 10).unwrap();
        assert_eq!(page, (0..10).collect::<Vec<_>>());
        let next = links["next"].as_str().unwrap();
        assert!(next.starts_with("http://127.0.0.1:9/api/lists?"), "{next}");
        let cursor = url::Url::parse(next)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "page[cursor]")
            .unwrap()
            .1
            .into_owned();
        let (page, links) = paginate(
            &ctx(&[("page[size]", "10"), ("page[cursor]", &cursor)]),
            &items,
            10,
            10,
        )
        .unwrap();
        assert_eq!(page[0], 10);
        assert!(links.get("prev").is_some());
        let last = encode_cursor(20);
        let (page, links) = paginate(&ctx(&[("page[cursor]", &last)]), &items, 10, 10).unwrap();
        assert_eq!(page.len(), 5);
        assert!(links.get("next").is_none());
    }

    #[test]
    fn page_size_out_of_range_is_rejected() {
        let err = paginate(&ctx(&[("page[size]", "11")]), &[1], 10, 10).unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(
            err.source,
            Some(ErrorSource::Parameter("page[size]".into()))
        );
    }

    #[test]
    fn sparse_fields_keep_named_and_dotted_keys() {
        let mut attrs = json!({"email": "a", "location": {"city": "x"}, "first_name": "b"})
            .as_object()
            .unwrap()
            .clone();
        apply_fields(&mut attrs, Some(&["email".into(), "location.city".into()]));
        assert_eq!(attrs.keys().collect::<Vec<_>>(), vec!["email", "location"]);
    }
}
