//! Reading Klaviyo's current state ([`LiveState`]) for `plan` and `apply`.
//!
//! The four collections are read concurrently: they live in different rate-limit buckets (lists
//! and segments in L, tags and tag groups in S), so reading them one after another would only add
//! latency. Lists and segments are read with their tags included, so the tag links come with
//! them at no extra request.

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt;

use super::client::KlaviyoClient;
use super::error::ApiError;
use super::types;
use crate::manifest::OptInProcess;
use crate::model::{LiveList, LiveSegment, LiveState, LiveTag, LiveTagGroup};

/// Everything klsync plans against: tag groups, tags (with their group), lists and segments
/// (with their tags and, for segments, their definitions).
pub async fn read_live(client: &KlaviyoClient) -> Result<LiveState, ApiError> {
    let (groups, tags, lists, segments) = futures::try_join!(
        client.list_tag_groups().try_collect::<Vec<_>>(),
        client.list_tags().try_collect::<Vec<_>>(),
        client.list_lists(true).try_collect::<Vec<_>>(),
        client.list_segments(true).try_collect::<Vec<_>>(),
    )?;
    Ok(assemble(groups, tags, lists, segments))
}

/// The live state from what the four collection reads returned.
fn assemble(
    groups: Vec<types::TagGroup>,
    tags: Vec<types::Tag>,
    lists: Vec<types::List>,
    segments: Vec<types::Segment>,
) -> LiveState {
    let tag_groups: BTreeMap<String, LiveTagGroup> = groups
        .into_iter()
        .map(|group| (group.id.clone(), live_tag_group(group)))
        .collect();
    let default_group = tag_groups
        .values()
        .find(|group| group.default)
        .map(|group| group.id.clone())
        .unwrap_or_default();
    let tags = tags
        .into_iter()
        .map(|tag| {
            (
                tag.id.clone(),
                LiveTag {
                    id: tag.id,
                    name: tag.name,
                    // Klaviyo puts every tag in a group; a tag reported without one is in the
                    // default group.
                    group_id: tag.tag_group_id.unwrap_or_else(|| default_group.clone()),
                },
            )
        })
        .collect();
    let lists = lists
        .into_iter()
        .map(|list| (list.id.clone(), live_list(list)))
        .collect();
    let segments = segments
        .into_iter()
        .map(|segment| (segment.id.clone(), live_segment(segment)))
        .collect();
    LiveState {
        tag_groups,
        tags,
        lists,
        segments,
    }
}

/// A tag group as the live state holds it.
pub fn live_tag_group(group: types::TagGroup) -> LiveTagGroup {
    LiveTagGroup {
        id: group.id,
        name: group.name,
        exclusive: group.exclusive,
        default: group.default,
    }
}

/// A list as the live state holds it.
pub fn live_list(list: types::List) -> LiveList {
    LiveList {
        id: list.id,
        name: list.name,
        opt_in_process: list.opt_in_process.map(opt_in_from_api),
        tag_ids: list.tag_ids.into_iter().collect::<BTreeSet<_>>(),
    }
}

/// A segment as the live state holds it (a definition Klaviyo did not send is `null`).
pub fn live_segment(segment: types::Segment) -> LiveSegment {
    LiveSegment {
        id: segment.id,
        name: segment.name,
        definition: segment.definition.unwrap_or(serde_json::Value::Null),
        is_starred: segment.is_starred,
        tag_ids: segment.tag_ids.into_iter().collect(),
    }
}

/// The manifest's spelling of an opt-in process (the two enums mirror each other).
pub fn opt_in_from_api(value: types::OptInProcess) -> OptInProcess {
    match value {
        types::OptInProcess::SingleOptIn => OptInProcess::SingleOptIn,
        types::OptInProcess::DoubleOptIn => OptInProcess::DoubleOptIn,
    }
}

/// The API's spelling of a manifest opt-in process.
pub fn opt_in_to_api(value: OptInProcess) -> types::OptInProcess {
    match value {
        OptInProcess::SingleOptIn => types::OptInProcess::SingleOptIn,
        OptInProcess::DoubleOptIn => types::OptInProcess::DoubleOptIn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_without_a_group_land_in_the_default_group_and_links_are_kept() {
        let live = assemble(
            vec![types::TagGroup {
                id: "g0".into(),
                name: "Default".into(),
                exclusive: false,
                default: true,
            }],
            vec![types::Tag {
                id: "t1".into(),
                name: "vip".into(),
                tag_group_id: None,
            }],
            vec![types::List {
                id: "L1".into(),
                name: "VIP".into(),
                opt_in_process: Some(types::OptInProcess::DoubleOptIn),
                created: None,
                updated: None,
                tag_ids: vec!["t1".into()],
            }],
            Vec::new(),
        );
        assert_eq!(live.tags["t1"].group_id, "g0");
        assert_eq!(live.default_tag_group_id(), Some("g0"));
        assert!(live.lists["L1"].tag_ids.contains("t1"));
        assert_eq!(
            live.lists["L1"].opt_in_process,
            Some(OptInProcess::DoubleOptIn)
        );
    }

    #[test]
    fn opt_in_conversions_round_trip() {
        for value in [OptInProcess::SingleOptIn, OptInProcess::DoubleOptIn] {
            assert_eq!(opt_in_from_api(opt_in_to_api(value)), value);
        }
    }
}
