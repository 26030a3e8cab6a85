//! Which rows of a bulk import job Klaviyo refused, from the job's import errors. Pure.
//!
//! The spec types an import error's `original_payload` as a free, nullable object and its
//! `source.pointer` as any pointer (default `/data`), so an error may name its profile in any
//! of these ways, tried in this order:
//! 1. the identifier in `original_payload.attributes` (the profile as sent);
//! 2. the identifier in `original_payload` itself (the attributes, flat);
//! 3. `source.pointer` of the form `/data/attributes/profiles/data/{index}...`: the profile at
//!    that index of the job's request.
//!
//! A pointer into the profile (`/data/attributes/email`) names no row. An error none of these
//! place is *unplaced*: the caller learns that some rows were refused but not which, and
//! isolates them by sending the job's rows again in halves (see `sync::run_jobs`).

use std::collections::{BTreeMap, HashMap};

use super::identify;
use crate::klaviyo::ImportError;
use crate::manifest::types::IdentifyBy;

/// What a job's import errors say about its rows.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Placed {
    /// Index in the job → Klaviyo's reason.
    pub refused: BTreeMap<usize, String>,
    /// Reasons of the errors no row could be found for.
    pub unplaced: Vec<String>,
}

impl Placed {
    /// Whether every failure the job counted (`failed_count`) is placed on a row.
    pub(crate) fn complete(&self, failed_count: u64) -> bool {
        self.unplaced.is_empty() && self.refused.len() as u64 >= failed_count
    }
}

/// Places each of `errors` on a row of a job whose profiles had `identifiers` (normalised, in
/// the job's order).
pub(super) fn place(
    errors: &[ImportError],
    identifiers: &[String],
    identify_by: IdentifyBy,
) -> Placed {
    let index: HashMap<&str, usize> = identifiers
        .iter()
        .enumerate()
        .map(|(at, identifier)| (identifier.as_str(), at))
        .collect();
    let field = super::identifier_field(identify_by);
    let mut placed = Placed::default();
    for error in errors {
        let reason = format!("{}: {}", error.title, error.detail);
        let by_payload = error.original_payload.as_ref().and_then(|payload| {
            [
                payload.get("attributes").and_then(|a| a.get(field)),
                payload.get(field),
            ]
            .into_iter()
            .flatten()
            .find_map(|value| identify::normalize(identify_by, value).ok())
            .and_then(|identifier| index.get(identifier.as_str()).copied())
        });
        let by_pointer = || {
            error
                .source_pointer
                .as_deref()
                .and_then(profile_index)
                .filter(|at| *at < identifiers.len())
        };
        match by_payload.or_else(by_pointer) {
            Some(at) => {
                placed.refused.insert(at, reason);
            }
            None => placed.unplaced.push(reason),
        }
    }
    placed
}

/// The profile index a pointer into the job's request names
/// (`/data/attributes/profiles/data/{index}`, possibly followed by a path inside the profile).
fn profile_index(pointer: &str) -> Option<usize> {
    let rest = pointer.strip_prefix("/data/attributes/profiles/data/")?;
    let digits = rest.split('/').next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn error(pointer: &str, payload: Option<Value>) -> ImportError {
        ImportError {
            id: "e".into(),
            code: "invalid".into(),
            title: "Invalid input".into(),
            detail: "Invalid email address.".into(),
            source_pointer: Some(pointer.into()),
            original_payload: payload,
        }
    }

    fn rows() -> Vec<String> {
        vec!["a@x.com".into(), "b@x.com".into(), "c@x.com".into()]
    }

    #[test]
    fn nested_flat_and_pointer_errors_name_their_row() {
        let errors = [
            error(
                "/data/attributes/email",
                Some(json!({"type": "profile", "attributes": {"email": "B@x.com"}})),
            ),
            error("/data/attributes/email", Some(json!({"email": "c@x.com"}))),
            error("/data/attributes/profiles/data/0/attributes/email", None),
        ];
        let placed = place(&errors, &rows(), IdentifyBy::Email);
        assert_eq!(
            placed.refused.keys().copied().collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(placed.refused[&1], "Invalid input: Invalid email address.");
        assert!(placed.complete(3));
    }

    #[test]
    fn errors_naming_nothing_or_no_row_of_the_job_are_unplaced() {
        let errors = [
            error("/data", None),
            // A pointer into the profile, not at it.
            error("/data/attributes/email", Some(json!({"name": "?"}))),
            // Past the job's end, or not an index.
            error("/data/attributes/profiles/data/7", None),
            error("/data/attributes/profiles/data/x1", None),
            // An identifier the job did not send.
            error("/data", Some(json!({"email": "z@x.com"}))),
        ];
        let placed = place(&errors, &rows(), IdentifyBy::Email);
        assert!(placed.refused.is_empty());
        assert_eq!(placed.unplaced.len(), 5);
        assert!(!placed.complete(5));
    }

    #[test]
    fn fewer_errors_than_failures_is_incomplete() {
        let errors = [error("/data/attributes/profiles/data/2", None)];
        let placed = place(&errors, &rows(), IdentifyBy::Email);
        assert!(placed.complete(1));
        assert!(!placed.complete(2), "one failure has no error at all");
    }
}
