//! Turning a successful response's body into typed values: a page of a collection (its items and
//! `links.next`) or a single resource. Pure (no I/O), so that everything a server can send is
//! checked in one place and can be fuzzed without one (tests/it/fuzz.rs).
//!
//! Whatever the body holds (HTML, truncated JSON, the wrong shape, numbers out of range, nesting
//! deeper than serde_json's recursion limit), the result is a value or an
//! [`ApiError::Decode`] naming the operation, the status, the content type and the start of the
//! body.

use serde::de::DeserializeOwned;

use super::error::{ApiError, snippet};
use super::operations::Operation;
use super::types::{CollectionDocument, Resource, SingleDocument};

/// A response with a 2xx status.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `content-type`, when sent.
    pub content_type: Option<String>,
    /// The body as received (at most the client's `max_response_bytes`).
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self, op: Operation) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| ApiError::Decode {
            operation: op,
            status: self.status,
            content_type: self.content_type.clone(),
            message: e.to_string(),
            body_snippet: snippet(&self.body),
        })
    }
}

/// One page of a collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The page's items, in order.
    pub items: Vec<T>,
    /// `links.next`, when there is a next page.
    pub next: Option<String>,
}

/// A collection page whose items travel as `W` (see [`super::types`]) and are used as `T`.
pub fn page<W, T>(reply: &Reply, op: Operation) -> Result<Page<T>, ApiError>
where
    W: DeserializeOwned,
    T: From<W>,
{
    let document: CollectionDocument<W> = reply.json(op)?;
    Ok(Page {
        items: document.data.into_iter().map(T::from).collect(),
        next: document.links.and_then(|links| links.next),
    })
}

/// A single-resource document whose attributes travel as `W`, used as `T`.
pub fn single<W, T>(reply: &Reply, op: Operation) -> Result<T, ApiError>
where
    W: DeserializeOwned,
    T: From<Resource<W>>,
{
    let document: SingleDocument<Resource<W>> = reply.json(op)?;
    Ok(T::from(document.data))
}
