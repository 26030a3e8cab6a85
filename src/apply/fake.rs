//! An in-memory Klaviyo for tests: [`KlaviyoWrite`] over a [`LiveState`], behaving like Klaviyo
//! where a plan relies on it. Creates get fresh ids; a tag created without a group goes into
//! the default group; deleting, updating or reading an id that does not exist is a 404 (which
//! the executor takes, on a delete, as already done); a deleted tag takes its links along and a
//! deleted group takes its tags along. Only with the `test-support` feature.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde_json::Value;

use super::write::KlaviyoWrite;
use crate::klaviyo::observe::{opt_in_from_api, opt_in_to_api};
use crate::klaviyo::{
    ApiError, List, Operation, OptInProcess, Segment, SegmentUpdate, Tag, TagGroup,
};
use crate::model::{LiveList, LiveSegment, LiveState, LiveTag, LiveTagGroup, ResourceKind};

/// An in-memory Klaviyo account (see the module docs).
pub struct FakeKlaviyo {
    state: Mutex<Fake>,
    /// How the account stores a segment definition written to it (and answers with it); the
    /// identity when `None`. Models a Klaviyo that stores definitions in a form of its own.
    stores_definition: Option<fn(&Value) -> Value>,
}

struct Fake {
    live: LiveState,
    created: usize,
}

fn not_found(operation: Operation) -> ApiError {
    ApiError::Klaviyo {
        status: 404,
        errors: Vec::new(),
        operation,
    }
}

impl FakeKlaviyo {
    /// An account holding `live`.
    pub fn new(live: LiveState) -> Self {
        FakeKlaviyo {
            state: Mutex::new(Fake { live, created: 0 }),
            stores_definition: None,
        }
    }

    /// The account, storing every segment definition written to it as `store` makes it.
    pub fn storing_definitions_as(mut self, store: fn(&Value) -> Value) -> Self {
        self.stores_definition = Some(store);
        self
    }

    /// What the account holds now.
    pub fn live(&self) -> LiveState {
        self.fake().live.clone()
    }

    fn fake(&self) -> std::sync::MutexGuard<'_, Fake> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stored(&self, definition: &Value) -> Value {
        match self.stores_definition {
            Some(store) => store(definition),
            None => definition.clone(),
        }
    }
}

impl Fake {
    fn fresh_id(&mut self, kind: ResourceKind) -> String {
        self.created += 1;
        format!("new-{kind}-{}", self.created)
    }

    fn delete_tag(&mut self, id: &str) -> bool {
        let found = self.live.tags.remove(id).is_some();
        for list in self.live.lists.values_mut() {
            list.tag_ids.remove(id);
        }
        for segment in self.live.segments.values_mut() {
            segment.tag_ids.remove(id);
        }
        found
    }

    /// Link (`linked`) or unlink the tag to targets; a missing tag or target is a 404.
    fn link(
        &mut self,
        operation: Operation,
        tag_id: &str,
        kind: ResourceKind,
        targets: &[String],
        linked: bool,
    ) -> Result<(), ApiError> {
        if !self.live.tags.contains_key(tag_id) {
            return Err(not_found(operation));
        }
        let exists = |id: &String| match kind {
            ResourceKind::List => self.live.lists.contains_key(id),
            _ => self.live.segments.contains_key(id),
        };
        if !targets.iter().all(exists) {
            return Err(not_found(operation));
        }
        for id in targets {
            let tag_ids = match kind {
                ResourceKind::List => self.live.lists.get_mut(id).map(|l| &mut l.tag_ids),
                _ => self.live.segments.get_mut(id).map(|s| &mut s.tag_ids),
            };
            if let Some(tag_ids) = tag_ids {
                if linked {
                    tag_ids.insert(tag_id.to_owned());
                } else {
                    tag_ids.remove(tag_id);
                }
            }
        }
        Ok(())
    }
}

fn tag_group(group: &LiveTagGroup) -> TagGroup {
    TagGroup {
        id: group.id.clone(),
        name: group.name.clone(),
        exclusive: group.exclusive,
        default: group.default,
    }
}

fn tag(tag: &LiveTag) -> Tag {
    Tag {
        id: tag.id.clone(),
        name: tag.name.clone(),
        tag_group_id: Some(tag.group_id.clone()),
    }
}

fn list(list: &LiveList) -> List {
    List {
        id: list.id.clone(),
        name: list.name.clone(),
        opt_in_process: list.opt_in_process.map(opt_in_to_api),
        created: None,
        updated: None,
        tag_ids: Vec::new(),
    }
}

fn segment(segment: &LiveSegment) -> Segment {
    Segment {
        id: segment.id.clone(),
        name: segment.name.clone(),
        definition: Some(segment.definition.clone()),
        is_active: true,
        is_processing: false,
        is_starred: segment.is_starred,
        created: None,
        updated: None,
        tag_ids: Vec::new(),
    }
}

impl KlaviyoWrite for FakeKlaviyo {
    fn halted(&self) -> Option<ApiError> {
        None
    }

    async fn create_tag_group(&self, name: &str, exclusive: bool) -> Result<TagGroup, ApiError> {
        let mut fake = self.fake();
        let id = fake.fresh_id(ResourceKind::TagGroup);
        let group = LiveTagGroup {
            id: id.clone(),
            name: name.to_owned(),
            exclusive,
            default: false,
        };
        let answer = tag_group(&group);
        fake.live.tag_groups.insert(id, group);
        Ok(answer)
    }

    async fn update_tag_group(&self, id: &str, name: &str) -> Result<(), ApiError> {
        let mut fake = self.fake();
        let group = fake
            .live
            .tag_groups
            .get_mut(id)
            .ok_or_else(|| not_found(Operation::UpdateTagGroup))?;
        group.name = name.to_owned();
        Ok(())
    }

    async fn delete_tag_group(&self, id: &str) -> Result<(), ApiError> {
        let mut fake = self.fake();
        if fake.live.tag_groups.remove(id).is_none() {
            return Err(not_found(Operation::DeleteTagGroup));
        }
        let tags: Vec<String> = fake
            .live
            .tags
            .values()
            .filter(|tag| tag.group_id == id)
            .map(|tag| tag.id.clone())
            .collect();
        for tag in tags {
            fake.delete_tag(&tag);
        }
        Ok(())
    }

    async fn find_tag_group_by_name(&self, name: &str) -> Result<Option<TagGroup>, ApiError> {
        let fake = self.fake();
        Ok(fake
            .live
            .tag_groups
            .values()
            .find(|group| group.name == name)
            .map(tag_group))
    }

    async fn create_tag(&self, name: &str, group_id: Option<&str>) -> Result<Tag, ApiError> {
        let mut fake = self.fake();
        let group_id = match group_id {
            Some(id) if fake.live.tag_groups.contains_key(id) => id.to_owned(),
            Some(_) => return Err(not_found(Operation::CreateTag)),
            None => fake
                .live
                .default_tag_group_id()
                .map(str::to_owned)
                .ok_or_else(|| not_found(Operation::CreateTag))?,
        };
        let id = fake.fresh_id(ResourceKind::Tag);
        let created = LiveTag {
            id: id.clone(),
            name: name.to_owned(),
            group_id,
        };
        let answer = tag(&created);
        fake.live.tags.insert(id, created);
        Ok(answer)
    }

    async fn update_tag(&self, id: &str, name: &str) -> Result<(), ApiError> {
        let mut fake = self.fake();
        let tag = fake
            .live
            .tags
            .get_mut(id)
            .ok_or_else(|| not_found(Operation::UpdateTag))?;
        tag.name = name.to_owned();
        Ok(())
    }

    async fn delete_tag(&self, id: &str) -> Result<(), ApiError> {
        if self.fake().delete_tag(id) {
            Ok(())
        } else {
            Err(not_found(Operation::DeleteTag))
        }
    }

    async fn find_tag(&self, name: &str, group_id: Option<&str>) -> Result<Option<Tag>, ApiError> {
        let fake = self.fake();
        let group_id = match group_id {
            Some(id) => Some(id),
            None => fake.live.default_tag_group_id(),
        };
        Ok(fake
            .live
            .tags
            .values()
            .find(|t| t.name == name && Some(t.group_id.as_str()) == group_id)
            .map(tag))
    }

    async fn create_list(
        &self,
        name: &str,
        opt_in: Option<OptInProcess>,
    ) -> Result<List, ApiError> {
        let mut fake = self.fake();
        let id = fake.fresh_id(ResourceKind::List);
        let created = LiveList {
            id: id.clone(),
            name: name.to_owned(),
            opt_in_process: opt_in.map(opt_in_from_api),
            tag_ids: BTreeSet::new(),
        };
        let answer = list(&created);
        fake.live.lists.insert(id, created);
        Ok(answer)
    }

    async fn update_list(
        &self,
        id: &str,
        name: Option<&str>,
        opt_in: Option<OptInProcess>,
    ) -> Result<List, ApiError> {
        let mut fake = self.fake();
        let updated = fake
            .live
            .lists
            .get_mut(id)
            .ok_or_else(|| not_found(Operation::UpdateList))?;
        if let Some(name) = name {
            updated.name = name.to_owned();
        }
        if let Some(opt_in) = opt_in {
            updated.opt_in_process = Some(opt_in_from_api(opt_in));
        }
        Ok(list(updated))
    }

    async fn delete_list(&self, id: &str) -> Result<(), ApiError> {
        match self.fake().live.lists.remove(id) {
            Some(_) => Ok(()),
            None => Err(not_found(Operation::DeleteList)),
        }
    }

    async fn find_list_by_name(&self, name: &str) -> Result<Option<List>, ApiError> {
        let fake = self.fake();
        Ok(fake.live.lists.values().find(|l| l.name == name).map(list))
    }

    async fn create_segment(
        &self,
        name: &str,
        definition: &Value,
        is_starred: bool,
    ) -> Result<Segment, ApiError> {
        let definition = self.stored(definition);
        let mut fake = self.fake();
        let id = fake.fresh_id(ResourceKind::Segment);
        let created = LiveSegment {
            id: id.clone(),
            name: name.to_owned(),
            definition,
            is_starred,
            tag_ids: BTreeSet::new(),
        };
        let answer = segment(&created);
        fake.live.segments.insert(id, created);
        Ok(answer)
    }

    async fn update_segment(&self, id: &str, update: &SegmentUpdate) -> Result<Segment, ApiError> {
        let definition = update.definition.as_ref().map(|d| self.stored(d));
        let mut fake = self.fake();
        let updated = fake
            .live
            .segments
            .get_mut(id)
            .ok_or_else(|| not_found(Operation::UpdateSegment))?;
        if let Some(name) = &update.name {
            updated.name.clone_from(name);
        }
        if let Some(definition) = definition {
            updated.definition = definition;
        }
        if let Some(starred) = update.is_starred {
            updated.is_starred = starred;
        }
        Ok(segment(updated))
    }

    async fn delete_segment(&self, id: &str) -> Result<(), ApiError> {
        match self.fake().live.segments.remove(id) {
            Some(_) => Ok(()),
            None => Err(not_found(Operation::DeleteSegment)),
        }
    }

    async fn get_segment(&self, id: &str) -> Result<Segment, ApiError> {
        let fake = self.fake();
        fake.live
            .segments
            .get(id)
            .map(segment)
            .ok_or_else(|| not_found(Operation::GetSegment))
    }

    async fn find_segment_by_name(&self, name: &str) -> Result<Option<Segment>, ApiError> {
        let fake = self.fake();
        Ok(fake
            .live
            .segments
            .values()
            .find(|s| s.name == name)
            .map(segment))
    }

    async fn tag_lists(&self, tag_id: &str, list_ids: &[String]) -> Result<(), ApiError> {
        let operation = Operation::TagLists;
        self.fake()
            .link(operation, tag_id, ResourceKind::List, list_ids, true)
    }

    async fn untag_lists(&self, tag_id: &str, list_ids: &[String]) -> Result<(), ApiError> {
        let operation = Operation::RemoveTagFromLists;
        self.fake()
            .link(operation, tag_id, ResourceKind::List, list_ids, false)
    }

    async fn tag_segments(&self, tag_id: &str, segment_ids: &[String]) -> Result<(), ApiError> {
        let operation = Operation::TagSegments;
        self.fake()
            .link(operation, tag_id, ResourceKind::Segment, segment_ids, true)
    }

    async fn untag_segments(&self, tag_id: &str, segment_ids: &[String]) -> Result<(), ApiError> {
        let operation = Operation::RemoveTagFromSegments;
        self.fake()
            .link(operation, tag_id, ResourceKind::Segment, segment_ids, false)
    }
}
