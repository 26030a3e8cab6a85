//! One module per resource; [`dispatch`] maps an operation to its handler.

pub mod bulk;
pub mod lists;
pub mod profiles;
pub mod segments;
pub mod tags;

use std::collections::BTreeMap;

use klaviyo_spec::operations::Operation;

use super::jsonapi::{ApiError, HandlerResult, RequestCtx};
use super::state::{State, Taggable};

/// The `kind` resource `id` among `resources`, or Klaviyo's 404 naming it.
fn found<'a, T>(
    resources: &'a BTreeMap<String, T>,
    kind: &str,
    id: &str,
) -> Result<&'a T, ApiError> {
    resources
        .get(id)
        .ok_or_else(|| ApiError::not_found(kind, id))
}

/// Runs the handler of `op` against the account.
pub fn dispatch(op: Operation, ctx: &RequestCtx, state: &mut State) -> HandlerResult {
    use Operation as O;
    match op {
        O::GetProfiles => profiles::get_profiles(ctx, state),
        O::GetProfile => profiles::get_profile(ctx, state),
        O::CreateProfile => profiles::create_profile(ctx, state),
        O::UpdateProfile => profiles::update_profile(ctx, state),
        O::CreateOrUpdateProfile => profiles::create_or_update_profile(ctx, state),
        O::GetListsForProfile => profiles::get_lists_for_profile(ctx, state, false),
        O::GetListIdsForProfile => profiles::get_lists_for_profile(ctx, state, true),
        O::GetSegmentsForProfile => profiles::get_segments_for_profile(ctx, state, false),
        O::GetSegmentIdsForProfile => profiles::get_segments_for_profile(ctx, state, true),
        O::BulkImportProfiles => bulk::create_job(ctx, state),
        O::GetBulkImportProfilesJobs => bulk::get_jobs(ctx, state),
        O::GetBulkImportProfilesJob => bulk::get_job(ctx, state),
        O::GetProfilesForBulkImportProfilesJob => bulk::get_job_profiles(ctx, state, false),
        O::GetProfileIdsForBulkImportProfilesJob => bulk::get_job_profiles(ctx, state, true),
        O::GetListForBulkImportProfilesJob => bulk::get_job_lists(ctx, state, false),
        O::GetListIdsForBulkImportProfilesJob => bulk::get_job_lists(ctx, state, true),
        O::GetErrorsForBulkImportProfilesJob => bulk::get_import_errors(ctx, state),
        O::GetLists => lists::get_lists(ctx, state),
        O::GetList => lists::get_list(ctx, state),
        O::CreateList => lists::create_list(ctx, state),
        O::UpdateList => lists::update_list(ctx, state),
        O::DeleteList => lists::delete_list(ctx, state),
        O::GetProfilesForList => lists::get_list_profiles(ctx, state, false),
        O::GetProfileIdsForList => lists::get_list_profiles(ctx, state, true),
        O::AddProfilesToList => lists::add_profiles(ctx, state),
        O::RemoveProfilesFromList => lists::remove_profiles(ctx, state),
        O::GetTagsForList => lists::get_tags_for(ctx, state, Taggable::List, false),
        O::GetTagIdsForList => lists::get_tags_for(ctx, state, Taggable::List, true),
        O::GetSegments => segments::get_segments(ctx, state),
        O::GetSegment => segments::get_segment(ctx, state),
        O::CreateSegment => segments::create_segment(ctx, state),
        O::UpdateSegment => segments::update_segment(ctx, state),
        O::DeleteSegment => segments::delete_segment(ctx, state),
        O::GetProfilesForSegment => segments::get_segment_profiles(ctx, state, false),
        O::GetProfileIdsForSegment => segments::get_segment_profiles(ctx, state, true),
        O::GetTagsForSegment => lists::get_tags_for(ctx, state, Taggable::Segment, false),
        O::GetTagIdsForSegment => lists::get_tags_for(ctx, state, Taggable::Segment, true),
        O::GetTags => tags::get_tags(ctx, state),
        O::GetTag => tags::get_tag(ctx, state),
        O::CreateTag => tags::create_tag(ctx, state),
        O::UpdateTag => tags::update_tag(ctx, state),
        O::DeleteTag => tags::delete_tag(ctx, state),
        O::GetListIdsForTag => tags::get_tagged(ctx, state, Taggable::List),
        O::TagLists => tags::tag(ctx, state, Taggable::List),
        O::RemoveTagFromLists => tags::untag(ctx, state, Taggable::List),
        O::GetSegmentIdsForTag => tags::get_tagged(ctx, state, Taggable::Segment),
        O::TagSegments => tags::tag(ctx, state, Taggable::Segment),
        O::RemoveTagFromSegments => tags::untag(ctx, state, Taggable::Segment),
        O::GetTagGroupForTag => tags::get_group_of_tag(ctx, state, false),
        O::GetTagGroupIdForTag => tags::get_group_of_tag(ctx, state, true),
        O::GetTagGroups => tags::get_tag_groups(ctx, state),
        O::GetTagGroup => tags::get_tag_group(ctx, state),
        O::CreateTagGroup => tags::create_tag_group(ctx, state),
        O::UpdateTagGroup => tags::update_tag_group(ctx, state),
        O::DeleteTagGroup => tags::delete_tag_group(ctx, state),
        O::GetTagsForTagGroup => tags::get_tags_of_group(ctx, state, false),
        O::GetTagIdsForTagGroup => tags::get_tags_of_group(ctx, state, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_returns_the_resource_or_a_404_naming_it() {
        let resources: BTreeMap<String, u32> = [("L1".to_owned(), 7)].into_iter().collect();
        assert_eq!(found(&resources, "list", "L1").ok(), Some(&7));
        let missing = found(&resources, "list", "L2").unwrap_err();
        assert_eq!(missing, ApiError::not_found("list", "L2"));
    }
}
