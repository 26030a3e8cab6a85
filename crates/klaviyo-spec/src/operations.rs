//! Every Klaviyo operation klsync uses, with its method, path template, rate limits and scopes.
//!
//! Generated once from the official OpenAPI spec (`x-klaviyo-ratelimit` and `x-klaviyo-scopes`
//! of each operation in klaviyo/openapi `openapi/stable.json`, revision 2026-07-15, MIT
//! licence; `tests/it/contract_spec_selftest.rs` checks the scopes against it). Pure data shared
//! by the client (which paces itself by it, and names a missing scope), the plan (which lists
//! the scopes an apply needs) and the emulator (which enforces both), so they can never
//! disagree.

/// The rate limits Klaviyo publishes for one operation: a 1-second burst window, a 60-second
/// steady window and, for a few creates, a daily cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per second.
    pub burst_per_second: u32,
    /// Requests allowed per minute.
    pub steady_per_minute: u32,
    /// Requests allowed per day, where Klaviyo caps the operation daily.
    pub daily: Option<u32>,
}

/// A Klaviyo API operation, named after its `operationId` in the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `GET /api/lists` (`get_lists`)
    GetLists,
    /// `POST /api/lists` (`create_list`)
    CreateList,
    /// `GET /api/lists/{id}` (`get_list`)
    GetList,
    /// `PATCH /api/lists/{id}` (`update_list`)
    UpdateList,
    /// `DELETE /api/lists/{id}` (`delete_list`)
    DeleteList,
    /// `GET /api/lists/{id}/tags` (`get_tags_for_list`)
    GetTagsForList,
    /// `GET /api/lists/{id}/relationships/tags` (`get_tag_ids_for_list`)
    GetTagIdsForList,
    /// `GET /api/lists/{id}/profiles` (`get_profiles_for_list`)
    GetProfilesForList,
    /// `GET /api/lists/{id}/relationships/profiles` (`get_profile_ids_for_list`)
    GetProfileIdsForList,
    /// `POST /api/lists/{id}/relationships/profiles` (`add_profiles_to_list`)
    AddProfilesToList,
    /// `DELETE /api/lists/{id}/relationships/profiles` (`remove_profiles_from_list`)
    RemoveProfilesFromList,
    /// `GET /api/profiles` (`get_profiles`)
    GetProfiles,
    /// `POST /api/profiles` (`create_profile`)
    CreateProfile,
    /// `GET /api/profiles/{id}` (`get_profile`)
    GetProfile,
    /// `PATCH /api/profiles/{id}` (`update_profile`)
    UpdateProfile,
    /// `GET /api/profile-bulk-import-jobs` (`get_bulk_import_profiles_jobs`)
    GetBulkImportProfilesJobs,
    /// `POST /api/profile-bulk-import-jobs` (`bulk_import_profiles`)
    BulkImportProfiles,
    /// `GET /api/profile-bulk-import-jobs/{job_id}` (`get_bulk_import_profiles_job`)
    GetBulkImportProfilesJob,
    /// `POST /api/profile-import` (`create_or_update_profile`)
    CreateOrUpdateProfile,
    /// `GET /api/profiles/{id}/lists` (`get_lists_for_profile`)
    GetListsForProfile,
    /// `GET /api/profiles/{id}/relationships/lists` (`get_list_ids_for_profile`)
    GetListIdsForProfile,
    /// `GET /api/profiles/{id}/segments` (`get_segments_for_profile`)
    GetSegmentsForProfile,
    /// `GET /api/profiles/{id}/relationships/segments` (`get_segment_ids_for_profile`)
    GetSegmentIdsForProfile,
    /// `GET /api/profile-bulk-import-jobs/{id}/lists` (`get_list_for_bulk_import_profiles_job`)
    GetListForBulkImportProfilesJob,
    /// `GET /api/profile-bulk-import-jobs/{id}/relationships/lists` (`get_list_ids_for_bulk_import_profiles_job`)
    GetListIdsForBulkImportProfilesJob,
    /// `GET /api/profile-bulk-import-jobs/{id}/profiles` (`get_profiles_for_bulk_import_profiles_job`)
    GetProfilesForBulkImportProfilesJob,
    /// `GET /api/profile-bulk-import-jobs/{id}/relationships/profiles` (`get_profile_ids_for_bulk_import_profiles_job`)
    GetProfileIdsForBulkImportProfilesJob,
    /// `GET /api/profile-bulk-import-jobs/{id}/import-errors` (`get_errors_for_bulk_import_profiles_job`)
    GetErrorsForBulkImportProfilesJob,
    /// `GET /api/segments` (`get_segments`)
    GetSegments,
    /// `POST /api/segments` (`create_segment`)
    CreateSegment,
    /// `GET /api/segments/{id}` (`get_segment`)
    GetSegment,
    /// `PATCH /api/segments/{id}` (`update_segment`)
    UpdateSegment,
    /// `DELETE /api/segments/{id}` (`delete_segment`)
    DeleteSegment,
    /// `GET /api/segments/{id}/tags` (`get_tags_for_segment`)
    GetTagsForSegment,
    /// `GET /api/segments/{id}/relationships/tags` (`get_tag_ids_for_segment`)
    GetTagIdsForSegment,
    /// `GET /api/segments/{id}/profiles` (`get_profiles_for_segment`)
    GetProfilesForSegment,
    /// `GET /api/segments/{id}/relationships/profiles` (`get_profile_ids_for_segment`)
    GetProfileIdsForSegment,
    /// `GET /api/tags` (`get_tags`)
    GetTags,
    /// `POST /api/tags` (`create_tag`)
    CreateTag,
    /// `GET /api/tags/{id}` (`get_tag`)
    GetTag,
    /// `PATCH /api/tags/{id}` (`update_tag`)
    UpdateTag,
    /// `DELETE /api/tags/{id}` (`delete_tag`)
    DeleteTag,
    /// `GET /api/tag-groups` (`get_tag_groups`)
    GetTagGroups,
    /// `POST /api/tag-groups` (`create_tag_group`)
    CreateTagGroup,
    /// `GET /api/tag-groups/{id}` (`get_tag_group`)
    GetTagGroup,
    /// `PATCH /api/tag-groups/{id}` (`update_tag_group`)
    UpdateTagGroup,
    /// `DELETE /api/tag-groups/{id}` (`delete_tag_group`)
    DeleteTagGroup,
    /// `GET /api/tags/{id}/relationships/lists` (`get_list_ids_for_tag`)
    GetListIdsForTag,
    /// `POST /api/tags/{id}/relationships/lists` (`tag_lists`)
    TagLists,
    /// `DELETE /api/tags/{id}/relationships/lists` (`remove_tag_from_lists`)
    RemoveTagFromLists,
    /// `GET /api/tags/{id}/relationships/segments` (`get_segment_ids_for_tag`)
    GetSegmentIdsForTag,
    /// `POST /api/tags/{id}/relationships/segments` (`tag_segments`)
    TagSegments,
    /// `DELETE /api/tags/{id}/relationships/segments` (`remove_tag_from_segments`)
    RemoveTagFromSegments,
    /// `GET /api/tags/{id}/tag-group` (`get_tag_group_for_tag`)
    GetTagGroupForTag,
    /// `GET /api/tags/{id}/relationships/tag-group` (`get_tag_group_id_for_tag`)
    GetTagGroupIdForTag,
    /// `GET /api/tag-groups/{id}/tags` (`get_tags_for_tag_group`)
    GetTagsForTagGroup,
    /// `GET /api/tag-groups/{id}/relationships/tags` (`get_tag_ids_for_tag_group`)
    GetTagIdsForTagGroup,
}

impl Operation {
    /// Every operation, in spec order.
    pub const ALL: &'static [Operation] = &[
        Operation::GetLists,
        Operation::CreateList,
        Operation::GetList,
        Operation::UpdateList,
        Operation::DeleteList,
        Operation::GetTagsForList,
        Operation::GetTagIdsForList,
        Operation::GetProfilesForList,
        Operation::GetProfileIdsForList,
        Operation::AddProfilesToList,
        Operation::RemoveProfilesFromList,
        Operation::GetProfiles,
        Operation::CreateProfile,
        Operation::GetProfile,
        Operation::UpdateProfile,
        Operation::GetBulkImportProfilesJobs,
        Operation::BulkImportProfiles,
        Operation::GetBulkImportProfilesJob,
        Operation::CreateOrUpdateProfile,
        Operation::GetListsForProfile,
        Operation::GetListIdsForProfile,
        Operation::GetSegmentsForProfile,
        Operation::GetSegmentIdsForProfile,
        Operation::GetListForBulkImportProfilesJob,
        Operation::GetListIdsForBulkImportProfilesJob,
        Operation::GetProfilesForBulkImportProfilesJob,
        Operation::GetProfileIdsForBulkImportProfilesJob,
        Operation::GetErrorsForBulkImportProfilesJob,
        Operation::GetSegments,
        Operation::CreateSegment,
        Operation::GetSegment,
        Operation::UpdateSegment,
        Operation::DeleteSegment,
        Operation::GetTagsForSegment,
        Operation::GetTagIdsForSegment,
        Operation::GetProfilesForSegment,
        Operation::GetProfileIdsForSegment,
        Operation::GetTags,
        Operation::CreateTag,
        Operation::GetTag,
        Operation::UpdateTag,
        Operation::DeleteTag,
        Operation::GetTagGroups,
        Operation::CreateTagGroup,
        Operation::GetTagGroup,
        Operation::UpdateTagGroup,
        Operation::DeleteTagGroup,
        Operation::GetListIdsForTag,
        Operation::TagLists,
        Operation::RemoveTagFromLists,
        Operation::GetSegmentIdsForTag,
        Operation::TagSegments,
        Operation::RemoveTagFromSegments,
        Operation::GetTagGroupForTag,
        Operation::GetTagGroupIdForTag,
        Operation::GetTagsForTagGroup,
        Operation::GetTagIdsForTagGroup,
    ];

    /// The spec's `operationId`.
    pub fn operation_id(self) -> &'static str {
        match self {
            Operation::GetLists => "get_lists",
            Operation::CreateList => "create_list",
            Operation::GetList => "get_list",
            Operation::UpdateList => "update_list",
            Operation::DeleteList => "delete_list",
            Operation::GetTagsForList => "get_tags_for_list",
            Operation::GetTagIdsForList => "get_tag_ids_for_list",
            Operation::GetProfilesForList => "get_profiles_for_list",
            Operation::GetProfileIdsForList => "get_profile_ids_for_list",
            Operation::AddProfilesToList => "add_profiles_to_list",
            Operation::RemoveProfilesFromList => "remove_profiles_from_list",
            Operation::GetProfiles => "get_profiles",
            Operation::CreateProfile => "create_profile",
            Operation::GetProfile => "get_profile",
            Operation::UpdateProfile => "update_profile",
            Operation::GetBulkImportProfilesJobs => "get_bulk_import_profiles_jobs",
            Operation::BulkImportProfiles => "bulk_import_profiles",
            Operation::GetBulkImportProfilesJob => "get_bulk_import_profiles_job",
            Operation::CreateOrUpdateProfile => "create_or_update_profile",
            Operation::GetListsForProfile => "get_lists_for_profile",
            Operation::GetListIdsForProfile => "get_list_ids_for_profile",
            Operation::GetSegmentsForProfile => "get_segments_for_profile",
            Operation::GetSegmentIdsForProfile => "get_segment_ids_for_profile",
            Operation::GetListForBulkImportProfilesJob => "get_list_for_bulk_import_profiles_job",
            Operation::GetListIdsForBulkImportProfilesJob => {
                "get_list_ids_for_bulk_import_profiles_job"
            }
            Operation::GetProfilesForBulkImportProfilesJob => {
                "get_profiles_for_bulk_import_profiles_job"
            }
            Operation::GetProfileIdsForBulkImportProfilesJob => {
                "get_profile_ids_for_bulk_import_profiles_job"
            }
            Operation::GetErrorsForBulkImportProfilesJob => {
                "get_errors_for_bulk_import_profiles_job"
            }
            Operation::GetSegments => "get_segments",
            Operation::CreateSegment => "create_segment",
            Operation::GetSegment => "get_segment",
            Operation::UpdateSegment => "update_segment",
            Operation::DeleteSegment => "delete_segment",
            Operation::GetTagsForSegment => "get_tags_for_segment",
            Operation::GetTagIdsForSegment => "get_tag_ids_for_segment",
            Operation::GetProfilesForSegment => "get_profiles_for_segment",
            Operation::GetProfileIdsForSegment => "get_profile_ids_for_segment",
            Operation::GetTags => "get_tags",
            Operation::CreateTag => "create_tag",
            Operation::GetTag => "get_tag",
            Operation::UpdateTag => "update_tag",
            Operation::DeleteTag => "delete_tag",
            Operation::GetTagGroups => "get_tag_groups",
            Operation::CreateTagGroup => "create_tag_group",
            Operation::GetTagGroup => "get_tag_group",
            Operation::UpdateTagGroup => "update_tag_group",
            Operation::DeleteTagGroup => "delete_tag_group",
            Operation::GetListIdsForTag => "get_list_ids_for_tag",
            Operation::TagLists => "tag_lists",
            Operation::RemoveTagFromLists => "remove_tag_from_lists",
            Operation::GetSegmentIdsForTag => "get_segment_ids_for_tag",
            Operation::TagSegments => "tag_segments",
            Operation::RemoveTagFromSegments => "remove_tag_from_segments",
            Operation::GetTagGroupForTag => "get_tag_group_for_tag",
            Operation::GetTagGroupIdForTag => "get_tag_group_id_for_tag",
            Operation::GetTagsForTagGroup => "get_tags_for_tag_group",
            Operation::GetTagIdsForTagGroup => "get_tag_ids_for_tag_group",
        }
    }

    /// The HTTP method.
    pub fn method(self) -> &'static str {
        match self {
            Operation::GetLists => "GET",
            Operation::CreateList => "POST",
            Operation::GetList => "GET",
            Operation::UpdateList => "PATCH",
            Operation::DeleteList => "DELETE",
            Operation::GetTagsForList => "GET",
            Operation::GetTagIdsForList => "GET",
            Operation::GetProfilesForList => "GET",
            Operation::GetProfileIdsForList => "GET",
            Operation::AddProfilesToList => "POST",
            Operation::RemoveProfilesFromList => "DELETE",
            Operation::GetProfiles => "GET",
            Operation::CreateProfile => "POST",
            Operation::GetProfile => "GET",
            Operation::UpdateProfile => "PATCH",
            Operation::GetBulkImportProfilesJobs => "GET",
            Operation::BulkImportProfiles => "POST",
            Operation::GetBulkImportProfilesJob => "GET",
            Operation::CreateOrUpdateProfile => "POST",
            Operation::GetListsForProfile => "GET",
            Operation::GetListIdsForProfile => "GET",
            Operation::GetSegmentsForProfile => "GET",
            Operation::GetSegmentIdsForProfile => "GET",
            Operation::GetListForBulkImportProfilesJob => "GET",
            Operation::GetListIdsForBulkImportProfilesJob => "GET",
            Operation::GetProfilesForBulkImportProfilesJob => "GET",
            Operation::GetProfileIdsForBulkImportProfilesJob => "GET",
            Operation::GetErrorsForBulkImportProfilesJob => "GET",
            Operation::GetSegments => "GET",
            Operation::CreateSegment => "POST",
            Operation::GetSegment => "GET",
            Operation::UpdateSegment => "PATCH",
            Operation::DeleteSegment => "DELETE",
            Operation::GetTagsForSegment => "GET",
            Operation::GetTagIdsForSegment => "GET",
            Operation::GetProfilesForSegment => "GET",
            Operation::GetProfileIdsForSegment => "GET",
            Operation::GetTags => "GET",
            Operation::CreateTag => "POST",
            Operation::GetTag => "GET",
            Operation::UpdateTag => "PATCH",
            Operation::DeleteTag => "DELETE",
            Operation::GetTagGroups => "GET",
            Operation::CreateTagGroup => "POST",
            Operation::GetTagGroup => "GET",
            Operation::UpdateTagGroup => "PATCH",
            Operation::DeleteTagGroup => "DELETE",
            Operation::GetListIdsForTag => "GET",
            Operation::TagLists => "POST",
            Operation::RemoveTagFromLists => "DELETE",
            Operation::GetSegmentIdsForTag => "GET",
            Operation::TagSegments => "POST",
            Operation::RemoveTagFromSegments => "DELETE",
            Operation::GetTagGroupForTag => "GET",
            Operation::GetTagGroupIdForTag => "GET",
            Operation::GetTagsForTagGroup => "GET",
            Operation::GetTagIdsForTagGroup => "GET",
        }
    }

    /// The path template as the spec writes it, e.g. `/api/lists/{id}`.
    pub fn path_template(self) -> &'static str {
        match self {
            Operation::GetLists => "/api/lists",
            Operation::CreateList => "/api/lists",
            Operation::GetList => "/api/lists/{id}",
            Operation::UpdateList => "/api/lists/{id}",
            Operation::DeleteList => "/api/lists/{id}",
            Operation::GetTagsForList => "/api/lists/{id}/tags",
            Operation::GetTagIdsForList => "/api/lists/{id}/relationships/tags",
            Operation::GetProfilesForList => "/api/lists/{id}/profiles",
            Operation::GetProfileIdsForList => "/api/lists/{id}/relationships/profiles",
            Operation::AddProfilesToList => "/api/lists/{id}/relationships/profiles",
            Operation::RemoveProfilesFromList => "/api/lists/{id}/relationships/profiles",
            Operation::GetProfiles => "/api/profiles",
            Operation::CreateProfile => "/api/profiles",
            Operation::GetProfile => "/api/profiles/{id}",
            Operation::UpdateProfile => "/api/profiles/{id}",
            Operation::GetBulkImportProfilesJobs => "/api/profile-bulk-import-jobs",
            Operation::BulkImportProfiles => "/api/profile-bulk-import-jobs",
            Operation::GetBulkImportProfilesJob => "/api/profile-bulk-import-jobs/{job_id}",
            Operation::CreateOrUpdateProfile => "/api/profile-import",
            Operation::GetListsForProfile => "/api/profiles/{id}/lists",
            Operation::GetListIdsForProfile => "/api/profiles/{id}/relationships/lists",
            Operation::GetSegmentsForProfile => "/api/profiles/{id}/segments",
            Operation::GetSegmentIdsForProfile => "/api/profiles/{id}/relationships/segments",
            Operation::GetListForBulkImportProfilesJob => {
                "/api/profile-bulk-import-jobs/{id}/lists"
            }
            Operation::GetListIdsForBulkImportProfilesJob => {
                "/api/profile-bulk-import-jobs/{id}/relationships/lists"
            }
            Operation::GetProfilesForBulkImportProfilesJob => {
                "/api/profile-bulk-import-jobs/{id}/profiles"
            }
            Operation::GetProfileIdsForBulkImportProfilesJob => {
                "/api/profile-bulk-import-jobs/{id}/relationships/profiles"
            }
            Operation::GetErrorsForBulkImportProfilesJob => {
                "/api/profile-bulk-import-jobs/{id}/import-errors"
            }
            Operation::GetSegments => "/api/segments",
            Operation::CreateSegment => "/api/segments",
            Operation::GetSegment => "/api/segments/{id}",
            Operation::UpdateSegment => "/api/segments/{id}",
            Operation::DeleteSegment => "/api/segments/{id}",
            Operation::GetTagsForSegment => "/api/segments/{id}/tags",
            Operation::GetTagIdsForSegment => "/api/segments/{id}/relationships/tags",
            Operation::GetProfilesForSegment => "/api/segments/{id}/profiles",
            Operation::GetProfileIdsForSegment => "/api/segments/{id}/relationships/profiles",
            Operation::GetTags => "/api/tags",
            Operation::CreateTag => "/api/tags",
            Operation::GetTag => "/api/tags/{id}",
            Operation::UpdateTag => "/api/tags/{id}",
            Operation::DeleteTag => "/api/tags/{id}",
            Operation::GetTagGroups => "/api/tag-groups",
            Operation::CreateTagGroup => "/api/tag-groups",
            Operation::GetTagGroup => "/api/tag-groups/{id}",
            Operation::UpdateTagGroup => "/api/tag-groups/{id}",
            Operation::DeleteTagGroup => "/api/tag-groups/{id}",
            Operation::GetListIdsForTag => "/api/tags/{id}/relationships/lists",
            Operation::TagLists => "/api/tags/{id}/relationships/lists",
            Operation::RemoveTagFromLists => "/api/tags/{id}/relationships/lists",
            Operation::GetSegmentIdsForTag => "/api/tags/{id}/relationships/segments",
            Operation::TagSegments => "/api/tags/{id}/relationships/segments",
            Operation::RemoveTagFromSegments => "/api/tags/{id}/relationships/segments",
            Operation::GetTagGroupForTag => "/api/tags/{id}/tag-group",
            Operation::GetTagGroupIdForTag => "/api/tags/{id}/relationships/tag-group",
            Operation::GetTagsForTagGroup => "/api/tag-groups/{id}/tags",
            Operation::GetTagIdsForTagGroup => "/api/tag-groups/{id}/relationships/tags",
        }
    }

    /// The API scopes a key needs for the operation (`x-klaviyo-scopes` in the spec); a key
    /// without one of them gets a 403.
    pub fn scopes(self) -> &'static [&'static str] {
        match self {
            Operation::GetLists => &["lists:read"],
            Operation::CreateList => &["lists:write"],
            Operation::GetList => &["lists:read"],
            Operation::UpdateList => &["lists:write"],
            Operation::DeleteList => &["lists:write"],
            Operation::GetTagsForList => &["lists:read", "tags:read"],
            Operation::GetTagIdsForList => &["lists:read", "tags:read"],
            Operation::GetProfilesForList => &["lists:read", "profiles:read"],
            Operation::GetProfileIdsForList => &["lists:read", "profiles:read"],
            Operation::AddProfilesToList => &["lists:write", "profiles:write"],
            Operation::RemoveProfilesFromList => &["lists:write", "profiles:write"],
            Operation::GetProfiles => &["profiles:read"],
            Operation::CreateProfile => &["profiles:write"],
            Operation::GetProfile => &["profiles:read"],
            Operation::UpdateProfile => &["profiles:write"],
            Operation::GetBulkImportProfilesJobs => &["lists:read", "profiles:read"],
            Operation::BulkImportProfiles => &["lists:write", "profiles:write"],
            Operation::GetBulkImportProfilesJob => &["lists:read", "profiles:read"],
            Operation::CreateOrUpdateProfile => &["profiles:write"],
            Operation::GetListsForProfile => &["lists:read", "profiles:read"],
            Operation::GetListIdsForProfile => &["lists:read", "profiles:read"],
            Operation::GetSegmentsForProfile => &["profiles:read", "segments:read"],
            Operation::GetSegmentIdsForProfile => &["profiles:read", "segments:read"],
            Operation::GetListForBulkImportProfilesJob => &["lists:read"],
            Operation::GetSegments => &["segments:read"],
            Operation::CreateSegment => &["segments:write"],
            Operation::GetSegment => &["segments:read"],
            Operation::UpdateSegment => &["segments:write"],
            Operation::DeleteSegment => &["segments:write"],
            Operation::GetTagsForSegment => &["segments:read", "tags:read"],
            Operation::GetTagIdsForSegment => &["segments:read", "tags:read"],
            Operation::GetProfilesForSegment => &["profiles:read", "segments:read"],
            Operation::GetProfileIdsForSegment => &["profiles:read", "segments:read"],
            Operation::GetTags => &["tags:read"],
            Operation::CreateTag => &["tags:read", "tags:write"],
            Operation::GetTag => &["tags:read"],
            Operation::UpdateTag => &["tags:read", "tags:write"],
            Operation::DeleteTag => &["tags:read", "tags:write"],
            Operation::GetTagGroups => &["tags:read"],
            Operation::CreateTagGroup => &["tags:read", "tags:write"],
            Operation::GetTagGroup => &["tags:read"],
            Operation::UpdateTagGroup => &["tags:read", "tags:write"],
            Operation::DeleteTagGroup => &["tags:read", "tags:write"],
            Operation::GetListIdsForTag => &["lists:read", "tags:read"],
            Operation::TagLists => &["lists:write", "tags:write"],
            Operation::RemoveTagFromLists => &["lists:write", "tags:write"],
            Operation::GetSegmentIdsForTag => &["segments:read", "tags:read"],
            Operation::TagSegments => &["segments:write", "tags:write"],
            Operation::RemoveTagFromSegments => &["segments:write", "tags:write"],
            Operation::GetTagGroupForTag => &["tags:read"],
            Operation::GetTagGroupIdForTag => &["tags:read"],
            Operation::GetTagsForTagGroup => &["tags:read"],
            Operation::GetTagIdsForTagGroup => &["tags:read"],
            Operation::GetListIdsForBulkImportProfilesJob => &["lists:read"],
            Operation::GetProfilesForBulkImportProfilesJob => &["profiles:read"],
            Operation::GetProfileIdsForBulkImportProfilesJob => &["profiles:read"],
            Operation::GetErrorsForBulkImportProfilesJob => &["profiles:read"],
        }
    }

    /// The published rate limit of the operation's own bucket.
    pub fn rate_limit(self) -> RateLimit {
        let (burst_per_second, steady_per_minute, daily) = match self {
            Operation::GetLists => (75, 750, None),
            Operation::CreateList => (10, 150, Some(150)),
            Operation::GetList => (75, 750, None),
            Operation::UpdateList => (10, 150, None),
            Operation::DeleteList => (10, 150, None),
            Operation::GetTagsForList => (3, 60, None),
            Operation::GetTagIdsForList => (3, 60, None),
            Operation::GetProfilesForList => (75, 750, None),
            Operation::GetProfileIdsForList => (75, 750, None),
            Operation::AddProfilesToList => (10, 150, None),
            Operation::RemoveProfilesFromList => (10, 150, None),
            Operation::GetProfiles => (75, 750, None),
            Operation::CreateProfile => (75, 750, None),
            Operation::GetProfile => (75, 750, None),
            Operation::UpdateProfile => (75, 750, None),
            Operation::GetBulkImportProfilesJobs => (10, 150, None),
            Operation::BulkImportProfiles => (10, 150, None),
            Operation::GetBulkImportProfilesJob => (10, 150, None),
            Operation::CreateOrUpdateProfile => (75, 750, None),
            Operation::GetListsForProfile => (3, 60, None),
            Operation::GetListIdsForProfile => (3, 60, None),
            Operation::GetSegmentsForProfile => (3, 60, None),
            Operation::GetSegmentIdsForProfile => (3, 60, None),
            Operation::GetListForBulkImportProfilesJob => (10, 150, None),
            Operation::GetListIdsForBulkImportProfilesJob => (10, 150, None),
            Operation::GetProfilesForBulkImportProfilesJob => (10, 150, None),
            Operation::GetProfileIdsForBulkImportProfilesJob => (10, 150, None),
            Operation::GetErrorsForBulkImportProfilesJob => (10, 150, None),
            Operation::GetSegments => (75, 750, None),
            Operation::CreateSegment => (1, 15, Some(100)),
            Operation::GetSegment => (75, 750, None),
            Operation::UpdateSegment => (1, 15, Some(100)),
            Operation::DeleteSegment => (3, 60, None),
            Operation::GetTagsForSegment => (3, 60, None),
            Operation::GetTagIdsForSegment => (3, 60, None),
            Operation::GetProfilesForSegment => (75, 750, None),
            Operation::GetProfileIdsForSegment => (75, 750, None),
            Operation::GetTags => (3, 60, None),
            Operation::CreateTag => (3, 60, None),
            Operation::GetTag => (3, 60, None),
            Operation::UpdateTag => (3, 60, None),
            Operation::DeleteTag => (3, 60, None),
            Operation::GetTagGroups => (3, 60, None),
            Operation::CreateTagGroup => (3, 60, None),
            Operation::GetTagGroup => (3, 60, None),
            Operation::UpdateTagGroup => (3, 60, None),
            Operation::DeleteTagGroup => (3, 60, None),
            Operation::GetListIdsForTag => (3, 60, None),
            Operation::TagLists => (3, 60, None),
            Operation::RemoveTagFromLists => (3, 60, None),
            Operation::GetSegmentIdsForTag => (3, 60, None),
            Operation::TagSegments => (3, 60, None),
            Operation::RemoveTagFromSegments => (3, 60, None),
            Operation::GetTagGroupForTag => (3, 60, None),
            Operation::GetTagGroupIdForTag => (3, 60, None),
            Operation::GetTagsForTagGroup => (3, 60, None),
            Operation::GetTagIdsForTagGroup => (3, 60, None),
        };
        RateLimit {
            burst_per_second,
            steady_per_minute,
            daily,
        }
    }
}

/// A stricter bucket Klaviyo charges *on top of* an operation's own bucket when the request asks
/// for expensive extras through `include=` or `additional-fields[...]=`.
///
/// Only the extras the spec publishes a limit for are listed (in the operation descriptions, not
/// in `x-klaviyo-ratelimit`). `include=tags` on GET /lists and GET /segments has no published
/// extra limit, so it consumes only the operation's own bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExtraBucket {
    /// `additional-fields[profile]=predictive_analytics` on GET /profiles or GET /profiles/{id}.
    ProfilePredictiveAnalytics,
    /// `include=lists` on GET /profiles/{id}.
    ProfileIncludeLists,
    /// `include=segments` on GET /profiles/{id}.
    ProfileIncludeSegments,
    /// `additional-fields[list]=profile_count` on GET /lists/{id}.
    ListProfileCount,
    /// `additional-fields[segment]=profile_count` on GET /segments/{id}.
    SegmentProfileCount,
}

impl ExtraBucket {
    /// Every extra bucket.
    pub const ALL: &'static [ExtraBucket] = &[
        ExtraBucket::ProfilePredictiveAnalytics,
        ExtraBucket::ProfileIncludeLists,
        ExtraBucket::ProfileIncludeSegments,
        ExtraBucket::ListProfileCount,
        ExtraBucket::SegmentProfileCount,
    ];

    /// A short stable name, unique among the extras of one operation.
    pub fn name(self) -> &'static str {
        match self {
            ExtraBucket::ProfilePredictiveAnalytics => "predictive_analytics",
            ExtraBucket::ProfileIncludeLists => "include_lists",
            ExtraBucket::ProfileIncludeSegments => "include_segments",
            ExtraBucket::ListProfileCount | ExtraBucket::SegmentProfileCount => "profile_count",
        }
    }

    /// The published limit of this bucket (none of them has a daily cap).
    pub fn rate_limit(self) -> RateLimit {
        let (burst_per_second, steady_per_minute) = match self {
            ExtraBucket::ProfilePredictiveAnalytics => (10, 150),
            ExtraBucket::ProfileIncludeLists
            | ExtraBucket::ProfileIncludeSegments
            | ExtraBucket::ListProfileCount
            | ExtraBucket::SegmentProfileCount => (1, 15),
        };
        RateLimit {
            burst_per_second,
            steady_per_minute,
            daily: None,
        }
    }
}

impl Operation {
    /// The extra buckets a request for this operation consumes given its decoded query
    /// parameters (`include`, `additional-fields[...]`; values comma-separated as the spec's
    /// `explode: false` arrays are). Parameters that carry no extra limit are ignored.
    pub fn extra_buckets<'a>(
        self,
        query: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<ExtraBucket> {
        let mut buckets = Vec::new();
        for (key, value) in query {
            for item in value.split(',').map(str::trim) {
                let bucket = match (self, key, item) {
                    (
                        Operation::GetProfiles | Operation::GetProfile,
                        "additional-fields[profile]",
                        "predictive_analytics",
                    ) => ExtraBucket::ProfilePredictiveAnalytics,
                    (Operation::GetProfile, "include", "lists") => ExtraBucket::ProfileIncludeLists,
                    (Operation::GetProfile, "include", "segments") => {
                        ExtraBucket::ProfileIncludeSegments
                    }
                    (Operation::GetList, "additional-fields[list]", "profile_count") => {
                        ExtraBucket::ListProfileCount
                    }
                    (Operation::GetSegment, "additional-fields[segment]", "profile_count") => {
                        ExtraBucket::SegmentProfileCount
                    }
                    _ => continue,
                };
                if !buckets.contains(&bucket) {
                    buckets.push(bucket);
                }
            }
        }
        buckets
    }
}

/// Matches a concrete request path against a spec path template, returning the values of the
/// `{param}` segments in order, or `None` when the path does not fit the template.
pub fn match_template<'p>(template: &str, path: &'p str) -> Option<Vec<&'p str>> {
    let mut template_segments = template.split('/');
    let mut path_segments = path.split('/');
    let mut params = Vec::new();
    loop {
        match (template_segments.next(), path_segments.next()) {
            (None, None) => return Some(params),
            (Some(t), Some(p)) if t.starts_with('{') && t.ends_with('}') => {
                if p.is_empty() {
                    return None;
                }
                params.push(p);
            }
            (Some(t), Some(p)) if t == p => {}
            _ => return None,
        }
    }
}

/// The operation a request (`method`, `path` without query string) corresponds to, if any.
pub fn operation_for(method: &str, path: &str) -> Option<Operation> {
    Operation::ALL.iter().copied().find(|op| {
        op.method().eq_ignore_ascii_case(method)
            && match_template(op.path_template(), path).is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_and_additional_fields_add_stricter_buckets() {
        let query = [
            ("include", "lists,segments"),
            (
                "additional-fields[profile]",
                "subscriptions,predictive_analytics",
            ),
        ];
        assert_eq!(
            Operation::GetProfile.extra_buckets(query),
            vec![
                ExtraBucket::ProfileIncludeLists,
                ExtraBucket::ProfileIncludeSegments,
                ExtraBucket::ProfilePredictiveAnalytics,
            ]
        );
        // GET /profiles has no `include=lists`; subscriptions carries no extra bucket.
        assert_eq!(
            Operation::GetProfiles.extra_buckets([
                ("include", "lists"),
                ("additional-fields[profile]", "subscriptions")
            ]),
            vec![]
        );
        assert_eq!(
            Operation::GetList.extra_buckets([("additional-fields[list]", "profile_count")]),
            vec![ExtraBucket::ListProfileCount]
        );
        assert_eq!(
            Operation::GetLists.extra_buckets([("include", "tags")]),
            vec![]
        );
        assert_eq!(
            ExtraBucket::SegmentProfileCount
                .rate_limit()
                .steady_per_minute,
            15
        );
    }

    #[test]
    fn operation_for_matches_templates_and_methods() {
        assert_eq!(
            operation_for("GET", "/api/lists"),
            Some(Operation::GetLists)
        );
        assert_eq!(
            operation_for("POST", "/api/lists"),
            Some(Operation::CreateList)
        );
        assert_eq!(
            operation_for("GET", "/api/lists/Y6nRLr"),
            Some(Operation::GetList)
        );
        assert_eq!(
            operation_for("DELETE", "/api/lists/Y6nRLr/relationships/profiles"),
            Some(Operation::RemoveProfilesFromList)
        );
        assert_eq!(
            operation_for("GET", "/api/tags/abc/relationships/tag-group"),
            Some(Operation::GetTagGroupIdForTag)
        );
        assert_eq!(operation_for("PUT", "/api/lists"), None);
        assert_eq!(operation_for("GET", "/api/lists//tags"), None);
        assert_eq!(operation_for("GET", "/api/nothing"), None);
    }

    #[test]
    fn match_template_extracts_params() {
        assert_eq!(
            match_template("/api/lists/{id}/tags", "/api/lists/abc/tags"),
            Some(vec!["abc"])
        );
        assert_eq!(
            match_template("/api/lists/{id}", "/api/lists/abc/tags"),
            None
        );
    }
}
