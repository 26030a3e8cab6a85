//! Everything that talks to Klaviyo. Only `client` imports reqwest.
//!
//! - [`client`]: the HTTP engine (auth, pacing, retries, pagination, tracing, metrics).
//! - `resources`: the typed operations, as methods of [`KlaviyoClient`].
//! - [`decode`]: response bodies into typed pages and resources (pure, fuzzed).
//! - [`types`]: resources and the JSON:API documents they travel in.
//! - [`ratelimit`]: client-side pacing to the published limits, and plan cost estimates.
//! - [`operations`]: the operation table shared with the emulator.
//! - [`limits`]: Klaviyo's published limits and profile field names.
//! - `gate`: whether another request may be sent (run deadline, circuit breaker).
//! - [`record`]: `--record-http`, every exchange as a JSON line.
//! - [`error`]: the error type, [`ApiError`].

pub mod client;
pub mod decode;
pub mod error;
mod gate;
pub mod observe;
pub mod record;
mod resources;

// Klaviyo's facts live in their own crate (shared with the emulator and the plan's cost model);
// re-exported so that `klaviyo::limits` and friends stay one path for the whole product.
pub use klaviyo_spec::{limits, operations, types};
// Pacing is pure (windows over a clock): the plan's estimate runs the same limiters.
pub use klsync_core::ratelimit;

pub use client::{
    ApiStream, ClientConfig, ClientMetrics, KlaviyoClient, MAX_PAGES_PER_COLLECTION,
    MAX_RESPONSE_BYTES,
};
pub use error::{ApiError, ApiErrorObject};
pub use limits::{BULK_IMPORT_MAX_BYTES, BULK_IMPORT_MAX_PROFILES, PROFILE_MAX_BYTES};
pub use operations::{ExtraBucket, Operation, RateLimit};
pub use record::HttpRecorder;
pub use types::{
    BulkImportJob, ImportError, JobStatus, List, OptInProcess, Profile, ProfileAttributes,
    ProfileData, ProfileIdentifier, Segment, SegmentUpdate, Tag, TagGroup, Upserted,
};
