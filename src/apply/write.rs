//! The Klaviyo writes the executor makes, as a trait: implemented by [`KlaviyoClient`] (by
//! delegation, below) and, for tests, by an in-memory fake
//! (`apply::fake::FakeKlaviyo`, behind the `test-support` feature), so that the
//! property test of plan -> apply -> plan drives the real [`crate::apply::Executor`].

// The executor drives these futures on its own task (lanes joined, never spawned): they need
// not be `Send`, which `async fn` in a public trait would otherwise have to promise.
#![allow(async_fn_in_trait)]

use serde_json::Value;

use crate::klaviyo::{
    ApiError, KlaviyoClient, List, OptInProcess, Segment, SegmentUpdate, Tag, TagGroup,
};

/// Exactly the operations [`crate::apply::Executor`] sends to Klaviyo, with the client's
/// meaning (see the methods of [`KlaviyoClient`] of the same names).
pub trait KlaviyoWrite {
    /// Why nothing more can be sent (Klaviyo stopped answering, the run's deadline passed).
    fn halted(&self) -> Option<ApiError>;

    /// Create a tag group.
    async fn create_tag_group(&self, name: &str, exclusive: bool) -> Result<TagGroup, ApiError>;
    /// Rename a tag group.
    async fn update_tag_group(&self, id: &str, name: &str) -> Result<(), ApiError>;
    /// Delete a tag group (and its tags).
    async fn delete_tag_group(&self, id: &str) -> Result<(), ApiError>;
    /// The tag group named exactly `name`, if any.
    async fn find_tag_group_by_name(&self, name: &str) -> Result<Option<TagGroup>, ApiError>;

    /// Create a tag, in the default group when `group_id` is `None`.
    async fn create_tag(&self, name: &str, group_id: Option<&str>) -> Result<Tag, ApiError>;
    /// Rename a tag.
    async fn update_tag(&self, id: &str, name: &str) -> Result<(), ApiError>;
    /// Delete a tag (and its links).
    async fn delete_tag(&self, id: &str) -> Result<(), ApiError>;
    /// The tag named exactly `name` in the group (the default group when `None`), if any.
    async fn find_tag(&self, name: &str, group_id: Option<&str>) -> Result<Option<Tag>, ApiError>;

    /// Create a list.
    async fn create_list(&self, name: &str, opt_in: Option<OptInProcess>)
    -> Result<List, ApiError>;
    /// Change a list's name or opt-in process.
    async fn update_list(
        &self,
        id: &str,
        name: Option<&str>,
        opt_in: Option<OptInProcess>,
    ) -> Result<List, ApiError>;
    /// Delete a list.
    async fn delete_list(&self, id: &str) -> Result<(), ApiError>;
    /// The list named exactly `name`, if any.
    async fn find_list_by_name(&self, name: &str) -> Result<Option<List>, ApiError>;

    /// Create a segment.
    async fn create_segment(
        &self,
        name: &str,
        definition: &Value,
        is_starred: bool,
    ) -> Result<Segment, ApiError>;
    /// Change a segment.
    async fn update_segment(&self, id: &str, update: &SegmentUpdate) -> Result<Segment, ApiError>;
    /// Delete a segment.
    async fn delete_segment(&self, id: &str) -> Result<(), ApiError>;
    /// Read a segment.
    async fn get_segment(&self, id: &str) -> Result<Segment, ApiError>;
    /// The segment named exactly `name`, if any.
    async fn find_segment_by_name(&self, name: &str) -> Result<Option<Segment>, ApiError>;

    /// Link a tag to lists.
    async fn tag_lists(&self, tag_id: &str, list_ids: &[String]) -> Result<(), ApiError>;
    /// Unlink a tag from lists.
    async fn untag_lists(&self, tag_id: &str, list_ids: &[String]) -> Result<(), ApiError>;
    /// Link a tag to segments.
    async fn tag_segments(&self, tag_id: &str, segment_ids: &[String]) -> Result<(), ApiError>;
    /// Unlink a tag from segments.
    async fn untag_segments(&self, tag_id: &str, segment_ids: &[String]) -> Result<(), ApiError>;
}

impl KlaviyoWrite for KlaviyoClient {
    fn halted(&self) -> Option<ApiError> {
        KlaviyoClient::halted(self)
    }
    async fn create_tag_group(&self, name: &str, exclusive: bool) -> Result<TagGroup, ApiError> {
        KlaviyoClient::create_tag_group(self, name, exclusive).await
    }
    async fn update_tag_group(&self, id: &str, name: &str) -> Result<(), ApiError> {
        KlaviyoClient::update_tag_group(self, id, name).await
    }
    async fn delete_tag_group(&self, id: &str) -> Result<(), ApiError> {
        KlaviyoClient::delete_tag_group(self, id).await
    }
    async fn find_tag_group_by_name(&self, name: &str) -> Result<Option<TagGroup>, ApiError> {
        KlaviyoClient::find_tag_group_by_name(self, name).await
    }
    async fn create_tag(&self, name: &str, group_id: Option<&str>) -> Result<Tag, ApiError> {
        KlaviyoClient::create_tag(self, name, group_id).await
    }
    async fn update_tag(&self, id: &str, name: &str) -> Result<(), ApiError> {
        KlaviyoClient::update_tag(self, id, name).await
    }
    async fn delete_tag(&self, id: &str) -> Result<(), ApiError> {
        KlaviyoClient::delete_tag(self, id).await
    }
    async fn find_tag(&self, name: &str, group_id: Option<&str>) -> Result<Option<Tag>, ApiError> {
        KlaviyoClient::find_tag(self, name, group_id).await
    }
    async fn create_list(
        &self,
        name: &str,
        opt_in: Option<OptInProcess>,
    ) -> Result<List, ApiError> {
        KlaviyoClient::create_list(self, name, opt_in).await
    }
    async fn update_list(
        &self,
        id: &str,
        name: Option<&str>,
        opt_in: Option<OptInProcess>,
    ) -> Result<List, ApiError> {
        KlaviyoClient::update_list(self, id, name, opt_in).await
    }
    async fn delete_list(&self, id: &str) -> Result<(), ApiError> {
        KlaviyoClient::delete_list(self, id).await
    }
    async fn find_list_by_name(&self, name: &str) -> Result<Option<List>, ApiError> {
        KlaviyoClient::find_list_by_name(self, name).await
    }
    async fn create_segment(
        &self,
        name: &str,
        definition: &Value,
        is_starred: bool,
    ) -> Result<Segment, ApiError> {
        KlaviyoClient::create_segment(self, name, definition, is_starred).await
    }
    async fn update_segment(&self, id: &str, update: &SegmentUpdate) -> Result<Segment, ApiError> {
        KlaviyoClient::update_segment(self, id, update).await
    }
    async fn delete_segment(&self, id: &str) -> Result<(), ApiError> {
        KlaviyoClient::delete_segment(self, id).await
    }
    async fn get_segment(&self, id: &str) -> Result<Segment, ApiError> {
        KlaviyoClient::get_segment(self, id).await
    }
    async fn find_segment_by_name(&self, name: &str) -> Result<Option<Segment>, ApiError> {
        KlaviyoClient::find_segment_by_name(self, name).await
    }
    async fn tag_lists(&self, tag_id: &str, list_ids: &[String]) -> Result<(), ApiError> {
        KlaviyoClient::tag_lists(self, tag_id, list_ids).await
    }
    async fn untag_lists(&self, tag_id: &str, list_ids: &[String]) -> Result<(), ApiError> {
        KlaviyoClient::untag_lists(self, tag_id, list_ids).await
    }
    async fn tag_segments(&self, tag_id: &str, segment_ids: &[String]) -> Result<(), ApiError> {
        KlaviyoClient::tag_segments(self, tag_id, segment_ids).await
    }
    async fn untag_segments(&self, tag_id: &str, segment_ids: &[String]) -> Result<(), ApiError> {
        KlaviyoClient::untag_segments(self, tag_id, segment_ids).await
    }
}
