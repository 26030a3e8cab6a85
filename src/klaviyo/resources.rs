//! The typed Klaviyo operations klsync uses, on top of the engine in `client`.
//!
//! Each write documents why it is or is not safe to repeat after an ambiguous failure (see the
//! retry rules in `client`).

use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use super::client::{ApiStream, Call, KlaviyoClient, path};
use super::decode::single;
use super::error::ApiError;
use super::limits::{
    self, BULK_IMPORT_MAX_BYTES, BULK_IMPORT_MAX_PROFILES, LIST_MEMBERS_PER_CALL,
    PROFILE_FILTER_BATCH, PROFILE_MAX_BYTES, PROFILES_PAGE_MAX, TAG_GROUPS_PAGE_MAX, TAGS_PAGE_MAX,
};
use super::operations::Operation;
use super::types::{
    self, BulkImportJob, Identifier, ImportError, List, MemberId, OptInProcess, Profile,
    ProfileAttributes, ProfileData, ProfileIdentifier, Resource, Segment, SegmentUpdate, Tag,
    TagGroup, Upserted, WireImportErrorAttributes, WireJobAttributes, WireListAttributes,
    WireSegmentAttributes, WireTagAttributes, WireTagGroupAttributes,
};

fn ensure_size(op: Operation, body: &Call, limit: usize) -> Result<(), ApiError> {
    let size = body.body.as_ref().map_or(0, Vec::len);
    if size > limit {
        return Err(ApiError::TooLarge {
            operation: op,
            detail: format!("{size} bytes, limit {limit}"),
        });
    }
    Ok(())
}

impl KlaviyoClient {
    // ---- profiles ---------------------------------------------------------------------------

    /// `GET /api/profiles/{id}`.
    pub async fn get_profile(&self, id: &str) -> Result<Profile, ApiError> {
        let op = Operation::GetProfile;
        let reply = self
            .execute(&Call::new(op, path(&["profiles", id])))
            .await?;
        single::<ProfileData, Profile>(&reply, op)
    }

    /// Profiles whose `identifier` is one of `values`, via `any(field,[...])` filters in batches
    /// of 100 values per request. Values with no profile are simply absent from the result.
    pub async fn find_profiles_by(
        &self,
        identifier: ProfileIdentifier,
        values: &[String],
    ) -> Result<Vec<Profile>, ApiError> {
        self.profiles_filtered(identifier, values, |filter| {
            Call::new(Operation::GetProfiles, path(&["profiles"]))
                .query("filter", filter)
                .query("page[size]", PROFILES_PAGE_MAX.to_string())
        })
        .await
    }

    /// The profiles `call` reads for `any(identifier,[...])` filters of [`PROFILE_FILTER_BATCH`]
    /// of `values` at a time (`call` makes the request for one filter).
    async fn profiles_filtered(
        &self,
        identifier: ProfileIdentifier,
        values: &[String],
        call: impl Fn(String) -> Call,
    ) -> Result<Vec<Profile>, ApiError> {
        let mut found = Vec::new();
        for batch in values.chunks(PROFILE_FILTER_BATCH) {
            let filter = format!("any({},{})", identifier.field(), types::filter_list(batch));
            let page: Vec<Profile> = self
                .paginate::<Resource<ProfileData>, Profile>(call(filter))
                .try_collect()
                .await?;
            found.extend(page);
        }
        Ok(found)
    }

    /// Every profile in the account, 100 per page.
    pub fn list_profiles(&self) -> ApiStream<Profile> {
        let call = Call::new(Operation::GetProfiles, path(&["profiles"]))
            .query("page[size]", PROFILES_PAGE_MAX.to_string());
        self.paginate::<Resource<ProfileData>, Profile>(call)
    }

    /// `POST /api/profiles`. After an ambiguous failure the profile is looked up by its first
    /// identifier (email, phone, external id) and returned if the create took effect; if the
    /// repeat then meets 409 `duplicate_profile`, the lost create landed after the lookup and
    /// the profile it made is returned. A 409 without an earlier ambiguous failure is returned
    /// as an error ([`ApiError::duplicate_profile_id`]): the profile existed before.
    pub async fn create_profile(
        &self,
        attributes: &ProfileAttributes,
    ) -> Result<Profile, ApiError> {
        let op = Operation::CreateProfile;
        let call = Call::new(op, path(&["profiles"])).json(&types::profile_create(attributes));
        ensure_size(op, &call, PROFILE_MAX_BYTES)?;
        let identifier = attributes
            .identifier()
            .map(|(kind, value)| (kind, value.to_string()));
        // Atomic rather than Cell so the future stays Send.
        let had_ambiguous_failure = std::sync::atomic::AtomicBool::new(false);
        let created = self
            .create_with_recovery(
                &call,
                |reply| single::<ProfileData, Profile>(&reply, op),
                || {
                    had_ambiguous_failure.store(true, std::sync::atomic::Ordering::Relaxed);
                    let identifier = identifier.clone();
                    async move {
                        let Some((kind, value)) = identifier else {
                            // No identifier: nothing to look up by; a repeat could duplicate.
                            return Ok(None);
                        };
                        Ok(self
                            .find_profiles_by(kind, &[value])
                            .await?
                            .into_iter()
                            .next())
                    }
                },
            )
            .await;
        match created {
            Err(error) if had_ambiguous_failure.load(std::sync::atomic::Ordering::Relaxed) => {
                match error.duplicate_profile_id() {
                    Some(id) => self.get_profile(id).await,
                    None => Err(error),
                }
            }
            other => other,
        }
    }

    /// `PATCH /api/profiles/{id}`: set/clear `attributes` and remove the `unset` property keys
    /// (`meta.patch_properties.unset`). Repeatable: a PATCH sets absolute values.
    pub async fn update_profile(
        &self,
        id: &str,
        attributes: &ProfileAttributes,
        unset: &[String],
    ) -> Result<Profile, ApiError> {
        let op = Operation::UpdateProfile;
        let call = Call::new(op, path(&["profiles", id]))
            .json(&types::profile_update(id, attributes, unset));
        ensure_size(op, &call, PROFILE_MAX_BYTES)?;
        let reply = self.execute(&call).await?;
        single::<ProfileData, Profile>(&reply, op)
    }

    /// `POST /api/profile-import`: create or update by identifier.
    pub async fn upsert_profile(
        &self,
        attributes: &ProfileAttributes,
    ) -> Result<Upserted, ApiError> {
        let op = Operation::CreateOrUpdateProfile;
        let call = Call::new(op, path(&["profile-import"]))
            .json(&types::profile_upsert(attributes))
            .repeatable(
                "an upsert keyed by identifiers: the second call updates what the first created",
            );
        ensure_size(op, &call, PROFILE_MAX_BYTES)?;
        let reply = self.execute(&call).await?;
        Ok(Upserted {
            profile: single::<ProfileData, Profile>(&reply, op)?,
            created: reply.status == 201,
        })
    }

    /// `POST /api/profile-import` with `meta.patch_properties.unset`: create or update by
    /// identifier and remove the `unset` property keys (bulk import cannot remove properties).
    /// Repeatable like [`Self::upsert_profile`]: removing an absent key is a no-op.
    pub async fn upsert_profile_unset(
        &self,
        attributes: &ProfileAttributes,
        unset: &[String],
    ) -> Result<Upserted, ApiError> {
        let op = Operation::CreateOrUpdateProfile;
        let call = Call::new(op, path(&["profile-import"]))
            .json(&types::profile_upsert_unset(attributes, unset))
            .repeatable("an upsert keyed by identifiers; unsetting an absent key changes nothing");
        ensure_size(op, &call, PROFILE_MAX_BYTES)?;
        let reply = self.execute(&call).await?;
        Ok(Upserted {
            profile: single::<ProfileData, Profile>(&reply, op)?,
            created: reply.status == 201,
        })
    }

    /// `POST /api/profile-bulk-import-jobs`. Refuses up front (nothing sent) above 10,000
    /// profiles, 100 KB for any one profile, or 5 MB of body.
    pub async fn create_bulk_import_job(
        &self,
        profiles: &[ProfileAttributes],
        list_ids: &[String],
    ) -> Result<BulkImportJob, ApiError> {
        let op = Operation::BulkImportProfiles;
        if profiles.len() > BULK_IMPORT_MAX_PROFILES {
            return Err(ApiError::TooLarge {
                operation: op,
                detail: format!(
                    "{} profiles, limit {BULK_IMPORT_MAX_PROFILES}",
                    profiles.len()
                ),
            });
        }
        for (index, profile) in profiles.iter().enumerate() {
            let size = serde_json::to_vec(&types::profile_upsert_object(profile))
                .expect("JSON values always serialize")
                .len();
            if size > PROFILE_MAX_BYTES {
                return Err(ApiError::TooLarge {
                    operation: op,
                    detail: format!("profile #{index} is {size} bytes, limit {PROFILE_MAX_BYTES}"),
                });
            }
        }
        let call = Call::new(op, path(&["profile-bulk-import-jobs"]))
            .json(&types::bulk_import_job(profiles, list_ids))
            .repeatable(
                "a job is an upsert of every profile plus set-like list adds; a duplicate job \
                 writes the same values and memberships again and leaves the same end state",
            );
        ensure_size(op, &call, BULK_IMPORT_MAX_BYTES)?;
        let reply = self.execute(&call).await?;
        single::<WireJobAttributes, BulkImportJob>(&reply, op)
    }

    /// `GET /api/profile-bulk-import-jobs/{id}`.
    pub async fn get_bulk_import_job(&self, id: &str) -> Result<BulkImportJob, ApiError> {
        let op = Operation::GetBulkImportProfilesJob;
        let reply = self
            .execute(&Call::new(op, path(&["profile-bulk-import-jobs", id])))
            .await?;
        single::<WireJobAttributes, BulkImportJob>(&reply, op)
    }

    /// Every error of a bulk import job, 100 per page.
    pub fn bulk_import_errors(&self, job_id: &str) -> ApiStream<ImportError> {
        let call = Call::new(
            Operation::GetErrorsForBulkImportProfilesJob,
            path(&["profile-bulk-import-jobs", job_id, "import-errors"]),
        )
        .query("page[size]", PROFILES_PAGE_MAX.to_string());
        self.paginate::<Resource<WireImportErrorAttributes>, ImportError>(call)
    }

    /// The profiles a bulk import job created or updated, with their identifiers only, 100 per
    /// page [spec: page max 100]: one request per 100 profiles of the job.
    pub fn bulk_import_job_profiles(&self, job_id: &str) -> ApiStream<Profile> {
        let call = Call::new(
            Operation::GetProfilesForBulkImportProfilesJob,
            path(&["profile-bulk-import-jobs", job_id, "profiles"]),
        )
        .query("fields[profile]", "email,external_id,phone_number")
        .query("page[size]", PROFILES_PAGE_MAX.to_string());
        self.paginate::<Resource<ProfileData>, Profile>(call)
    }

    // ---- lists ------------------------------------------------------------------------------

    /// Every list, 10 per page; with `include_tags`, each list carries its tag ids.
    pub fn list_lists(&self, include_tags: bool) -> ApiStream<List> {
        self.list_groups(include_tags)
    }

    /// `GET /api/lists/{id}` (with its tag ids).
    pub async fn get_list(&self, id: &str) -> Result<List, ApiError> {
        self.get_group(id).await
    }

    /// The list named exactly `name`, if any (`equals(name,[...])`).
    pub async fn find_list_by_name(&self, name: &str) -> Result<Option<List>, ApiError> {
        self.find_group_by_name(name).await
    }

    /// `POST /api/lists`. Not blindly repeatable (a repeat makes a second list); after an
    /// ambiguous failure the list is looked up by name.
    pub async fn create_list(
        &self,
        name: &str,
        opt_in: Option<OptInProcess>,
    ) -> Result<List, ApiError> {
        let op = Operation::CreateList;
        let call = Call::new(op, path(&["lists"])).json(&types::list_create(name, opt_in));
        self.create_with_recovery(
            &call,
            |reply| single::<WireListAttributes, List>(&reply, op),
            || self.find_list_by_name(name),
        )
        .await
    }

    /// `PATCH /api/lists/{id}`; `None` leaves a field unchanged.
    pub async fn update_list(
        &self,
        id: &str,
        name: Option<&str>,
        opt_in: Option<OptInProcess>,
    ) -> Result<List, ApiError> {
        let op = Operation::UpdateList;
        let call = Call::new(op, path(&["lists", id])).json(&types::list_update(id, name, opt_in));
        single::<WireListAttributes, List>(&self.execute(&call).await?, op)
    }

    /// `DELETE /api/lists/{id}`.
    pub async fn delete_list(&self, id: &str) -> Result<(), ApiError> {
        self.execute(&Call::new(Operation::DeleteList, path(&["lists", id])))
            .await
            .map(drop)
    }

    /// Add profiles (by id) to a list, 1000 per request. Membership is a set, so a repeated add
    /// is a no-op and the request is retried freely.
    pub async fn add_profiles_to_list(
        &self,
        list_id: &str,
        profile_ids: &[String],
    ) -> Result<(), ApiError> {
        self.list_members(Operation::AddProfilesToList, list_id, profile_ids)
            .await
    }

    /// Remove profiles (by id) from a list, 1000 per request (set semantics, as for adds). This
    /// does not change consent.
    pub async fn remove_profiles_from_list(
        &self,
        list_id: &str,
        profile_ids: &[String],
    ) -> Result<(), ApiError> {
        self.list_members(Operation::RemoveProfilesFromList, list_id, profile_ids)
            .await
    }

    async fn list_members(
        &self,
        op: Operation,
        list_id: &str,
        profile_ids: &[String],
    ) -> Result<(), ApiError> {
        for chunk in profile_ids.chunks(LIST_MEMBERS_PER_CALL) {
            let call = Call::new(op, path(&["lists", list_id, "relationships", "profiles"]))
                .json(&types::identifiers("profile", chunk))
                .repeatable("relationship writes have set semantics");
            self.execute(&call).await?;
        }
        Ok(())
    }

    /// Ids of every member of a list, 100 per page.
    pub fn list_member_ids(&self, list_id: &str) -> ApiStream<String> {
        let call = Call::new(
            Operation::GetProfileIdsForList,
            path(&["lists", list_id, "relationships", "profiles"]),
        )
        .query("page[size]", PROFILES_PAGE_MAX.to_string());
        self.paginate::<Identifier, MemberId>(call)
            .map_ok(|id| id.0)
            .boxed()
    }

    /// Every member profile of a list with its identifiers only
    /// (`GET /api/lists/{id}/profiles`,
    /// `fields[profile]=email,external_id,phone_number,joined_group_at`; the spec makes
    /// `joined_group_at` a required attribute of this response), 100 per page: one request per
    /// 100 members.
    pub fn list_member_profiles(&self, list_id: &str) -> ApiStream<Profile> {
        let call = Call::new(
            Operation::GetProfilesForList,
            path(&["lists", list_id, "profiles"]),
        )
        .query(
            "fields[profile]",
            "email,external_id,phone_number,joined_group_at",
        )
        .query("page[size]", PROFILES_PAGE_MAX.to_string());
        self.paginate::<Resource<ProfileData>, Profile>(call)
    }

    /// The members of a list among the profiles whose `identifier` (email or phone number:
    /// the only identifiers the endpoint filters by [spec]) is one of `values`, via `any(...)`
    /// filters of 100 values per request.
    pub async fn list_members_among(
        &self,
        list_id: &str,
        identifier: ProfileIdentifier,
        values: &[String],
    ) -> Result<Vec<Profile>, ApiError> {
        self.profiles_filtered(identifier, values, |filter| {
            Call::new(
                Operation::GetProfilesForList,
                path(&["lists", list_id, "profiles"]),
            )
            .query("filter", filter)
            .query("fields[profile]", "email,external_id,phone_number")
            .query("page[size]", PROFILES_PAGE_MAX.to_string())
        })
        .await
    }

    // ---- segments ---------------------------------------------------------------------------

    /// Every segment with its definition, 10 per page; with `include_tags`, with tag ids.
    pub fn list_segments(&self, include_tags: bool) -> ApiStream<Segment> {
        self.list_groups(include_tags)
    }

    /// `GET /api/segments/{id}` (with its tag ids).
    pub async fn get_segment(&self, id: &str) -> Result<Segment, ApiError> {
        self.get_group(id).await
    }

    /// The segment named exactly `name`, if any (`equals(name,[...])`).
    pub async fn find_segment_by_name(&self, name: &str) -> Result<Option<Segment>, ApiError> {
        self.find_group_by_name(name).await
    }

    // ---- lists and segments alike ----------------------------------------------------------

    /// Every list or segment, 10 per page; with `include_tags`, each carries its tag ids.
    fn list_groups<G: Group>(&self, include_tags: bool) -> ApiStream<G> {
        let mut call =
            Call::new(G::GET_ALL, path(&[G::PATH])).query("page[size]", G::PAGE_MAX.to_string());
        if include_tags {
            call = call.query("include", "tags");
        }
        self.paginate::<Resource<G::Wire>, G>(call)
    }

    /// `GET /api/{lists,segments}/{id}` (with its tag ids).
    async fn get_group<G: Group>(&self, id: &str) -> Result<G, ApiError> {
        let call = Call::new(G::GET_ONE, path(&[G::PATH, id])).query("include", "tags");
        single::<G::Wire, G>(&self.execute(&call).await?, G::GET_ONE)
    }

    /// The list or segment named exactly `name`, if any (`equals(name,[...])`).
    async fn find_group_by_name<G: Group>(&self, name: &str) -> Result<Option<G>, ApiError> {
        let call = Call::new(G::GET_ALL, path(&[G::PATH])).query(
            "filter",
            format!("equals(name,{})", types::filter_list(&[name.to_string()])),
        );
        let found: Vec<G> = self
            .paginate::<Resource<G::Wire>, G>(call)
            .try_collect()
            .await?;
        Ok(found.into_iter().find(|group| group.name() == name))
    }

    /// `POST /api/segments`. Not blindly repeatable; recovered by name after an ambiguous
    /// failure (which also protects the 100/day cap).
    pub async fn create_segment(
        &self,
        name: &str,
        definition: &Value,
        is_starred: bool,
    ) -> Result<Segment, ApiError> {
        let op = Operation::CreateSegment;
        let call = Call::new(op, path(&["segments"]))
            .json(&types::segment_create(name, definition, is_starred));
        self.create_with_recovery(
            &call,
            |reply| single::<WireSegmentAttributes, Segment>(&reply, op),
            || self.find_segment_by_name(name),
        )
        .await
    }

    /// `PATCH /api/segments/{id}`. Klaviyo requires `is_active: false` to be sent alone, so a
    /// deactivation combined with other changes is sent as two requests, changes first.
    pub async fn update_segment(
        &self,
        id: &str,
        update: &SegmentUpdate,
    ) -> Result<Segment, ApiError> {
        let op = Operation::UpdateSegment;
        let send = |update: SegmentUpdate| async move {
            let call =
                Call::new(op, path(&["segments", id])).json(&types::segment_update(id, &update));
            single::<WireSegmentAttributes, Segment>(&self.execute(&call).await?, op)
        };
        if update.is_active == Some(false)
            && (update.name.is_some() || update.definition.is_some() || update.is_starred.is_some())
        {
            send(SegmentUpdate {
                is_active: None,
                ..update.clone()
            })
            .await?;
            return send(SegmentUpdate {
                is_active: Some(false),
                ..SegmentUpdate::default()
            })
            .await;
        }
        send(update.clone()).await
    }

    /// `DELETE /api/segments/{id}`.
    pub async fn delete_segment(&self, id: &str) -> Result<(), ApiError> {
        self.execute(&Call::new(
            Operation::DeleteSegment,
            path(&["segments", id]),
        ))
        .await
        .map(drop)
    }

    /// Ids of every member of a segment, 100 per page.
    pub fn segment_member_ids(&self, segment_id: &str) -> ApiStream<String> {
        let call = Call::new(
            Operation::GetProfileIdsForSegment,
            path(&["segments", segment_id, "relationships", "profiles"]),
        )
        .query("page[size]", PROFILES_PAGE_MAX.to_string());
        self.paginate::<Identifier, MemberId>(call)
            .map_ok(|id| id.0)
            .boxed()
    }

    // ---- tags -------------------------------------------------------------------------------

    /// Every tag with its group id, 50 per page.
    pub fn list_tags(&self) -> ApiStream<Tag> {
        let call = Call::new(Operation::GetTags, path(&["tags"]))
            .query("include", "tag-group")
            .query("page[size]", TAGS_PAGE_MAX.to_string());
        self.paginate::<Resource<WireTagAttributes>, Tag>(call)
    }

    /// The tag named exactly `name` in `group_id` (or in the Default Tag Group when `None`).
    pub async fn find_tag(
        &self,
        name: &str,
        group_id: Option<&str>,
    ) -> Result<Option<Tag>, ApiError> {
        let group_id = match group_id {
            Some(id) => id.to_string(),
            None => match self.default_tag_group().await? {
                Some(group) => group.id,
                None => return Ok(None),
            },
        };
        let call = Call::new(Operation::GetTags, path(&["tags"]))
            .query(
                "filter",
                format!("equals(name,{})", types::filter_string(name)),
            )
            .query("include", "tag-group");
        let tags: Vec<Tag> = self
            .paginate::<Resource<WireTagAttributes>, Tag>(call)
            .try_collect()
            .await?;
        Ok(tags
            .into_iter()
            .find(|tag| tag.name == name && tag.tag_group_id.as_deref() == Some(group_id.as_str())))
    }

    async fn default_tag_group(&self) -> Result<Option<TagGroup>, ApiError> {
        let call = Call::new(Operation::GetTagGroups, path(&["tag-groups"]))
            .query("filter", "equals(default,true)");
        let groups: Vec<TagGroup> = self
            .paginate::<Resource<WireTagGroupAttributes>, TagGroup>(call)
            .try_collect()
            .await?;
        Ok(groups.into_iter().find(|group| group.default))
    }

    /// `POST /api/tags`, in `group_id` or the Default Tag Group. Not blindly repeatable;
    /// recovered by name within the group after an ambiguous failure.
    pub async fn create_tag(&self, name: &str, group_id: Option<&str>) -> Result<Tag, ApiError> {
        let op = Operation::CreateTag;
        let call = Call::new(op, path(&["tags"])).json(&types::tag_create(name, group_id));
        self.create_with_recovery(
            &call,
            |reply| {
                let mut tag = single::<WireTagAttributes, Tag>(&reply, op)?;
                if tag.tag_group_id.is_none() {
                    tag.tag_group_id = group_id.map(str::to_string);
                }
                Ok(tag)
            },
            || self.find_tag(name, group_id),
        )
        .await
    }

    /// `PATCH /api/tags/{id}` (rename; Klaviyo answers 204).
    pub async fn update_tag(&self, id: &str, name: &str) -> Result<(), ApiError> {
        let call =
            Call::new(Operation::UpdateTag, path(&["tags", id])).json(&types::tag_update(id, name));
        self.execute(&call).await.map(drop)
    }

    /// `DELETE /api/tags/{id}` (also removes its associations).
    pub async fn delete_tag(&self, id: &str) -> Result<(), ApiError> {
        self.execute(&Call::new(Operation::DeleteTag, path(&["tags", id])))
            .await
            .map(drop)
    }

    /// Link a tag to lists.
    pub async fn tag_lists(&self, tag_id: &str, list_ids: &[String]) -> Result<(), ApiError> {
        self.tag_relationship(Operation::TagLists, tag_id, "lists", "list", list_ids)
            .await
    }

    /// Unlink a tag from lists.
    pub async fn untag_lists(&self, tag_id: &str, list_ids: &[String]) -> Result<(), ApiError> {
        self.tag_relationship(
            Operation::RemoveTagFromLists,
            tag_id,
            "lists",
            "list",
            list_ids,
        )
        .await
    }

    /// Link a tag to segments.
    pub async fn tag_segments(&self, tag_id: &str, segment_ids: &[String]) -> Result<(), ApiError> {
        self.tag_relationship(
            Operation::TagSegments,
            tag_id,
            "segments",
            "segment",
            segment_ids,
        )
        .await
    }

    /// Unlink a tag from segments.
    pub async fn untag_segments(
        &self,
        tag_id: &str,
        segment_ids: &[String],
    ) -> Result<(), ApiError> {
        self.tag_relationship(
            Operation::RemoveTagFromSegments,
            tag_id,
            "segments",
            "segment",
            segment_ids,
        )
        .await
    }

    async fn tag_relationship(
        &self,
        op: Operation,
        tag_id: &str,
        relationship: &str,
        kind: &str,
        ids: &[String],
    ) -> Result<(), ApiError> {
        if ids.is_empty() {
            return Ok(());
        }
        let call = Call::new(op, path(&["tags", tag_id, "relationships", relationship]))
            .json(&types::identifiers(kind, ids))
            .repeatable("relationship writes have set semantics");
        self.execute(&call).await.map(drop)
    }

    /// Ids of the lists carrying a tag.
    pub async fn list_ids_for_tag(&self, tag_id: &str) -> Result<Vec<String>, ApiError> {
        self.related_ids(
            Operation::GetListIdsForTag,
            &["tags", tag_id, "relationships", "lists"],
        )
        .await
    }

    /// Ids of the segments carrying a tag.
    pub async fn segment_ids_for_tag(&self, tag_id: &str) -> Result<Vec<String>, ApiError> {
        self.related_ids(
            Operation::GetSegmentIdsForTag,
            &["tags", tag_id, "relationships", "segments"],
        )
        .await
    }

    async fn related_ids(&self, op: Operation, parts: &[&str]) -> Result<Vec<String>, ApiError> {
        // The spec gives these no page parameters, but links.next is still followed if present.
        self.paginate::<Identifier, MemberId>(Call::new(op, path(parts)))
            .map_ok(|id| id.0)
            .try_collect()
            .await
    }

    // ---- tag groups -------------------------------------------------------------------------

    /// Every tag group, 25 per page.
    pub fn list_tag_groups(&self) -> ApiStream<TagGroup> {
        let call = Call::new(Operation::GetTagGroups, path(&["tag-groups"]))
            .query("page[size]", TAG_GROUPS_PAGE_MAX.to_string());
        self.paginate::<Resource<WireTagGroupAttributes>, TagGroup>(call)
    }

    /// The tag group named exactly `name`, if any.
    pub async fn find_tag_group_by_name(&self, name: &str) -> Result<Option<TagGroup>, ApiError> {
        let call = Call::new(Operation::GetTagGroups, path(&["tag-groups"])).query(
            "filter",
            format!("equals(name,{})", types::filter_string(name)),
        );
        let groups: Vec<TagGroup> = self
            .paginate::<Resource<WireTagGroupAttributes>, TagGroup>(call)
            .try_collect()
            .await?;
        Ok(groups.into_iter().find(|group| group.name == name))
    }

    /// `POST /api/tag-groups`. Not blindly repeatable; recovered by name after an ambiguous
    /// failure.
    pub async fn create_tag_group(
        &self,
        name: &str,
        exclusive: bool,
    ) -> Result<TagGroup, ApiError> {
        let op = Operation::CreateTagGroup;
        let call =
            Call::new(op, path(&["tag-groups"])).json(&types::tag_group_create(name, exclusive));
        self.create_with_recovery(
            &call,
            |reply| single::<WireTagGroupAttributes, TagGroup>(&reply, op),
            || self.find_tag_group_by_name(name),
        )
        .await
    }

    /// `PATCH /api/tag-groups/{id}` (rename; Klaviyo answers 204).
    pub async fn update_tag_group(&self, id: &str, name: &str) -> Result<(), ApiError> {
        let call = Call::new(Operation::UpdateTagGroup, path(&["tag-groups", id]))
            .json(&types::tag_group_update(id, name));
        self.execute(&call).await.map(drop)
    }

    /// `DELETE /api/tag-groups/{id}` (deletes its tags too; the default group cannot be deleted).
    pub async fn delete_tag_group(&self, id: &str) -> Result<(), ApiError> {
        self.execute(&Call::new(
            Operation::DeleteTagGroup,
            path(&["tag-groups", id]),
        ))
        .await
        .map(drop)
    }

    /// Ids of the tags in a group.
    pub async fn tag_ids_for_group(&self, group_id: &str) -> Result<Vec<String>, ApiError> {
        self.related_ids(
            Operation::GetTagIdsForTagGroup,
            &["tag-groups", group_id, "relationships", "tags"],
        )
        .await
    }
}

/// Lists and segments, which Klaviyo reads alike: pages of 10, their tag ids included, found by
/// exact name. They differ in path, operations and attributes.
trait Group: From<Resource<Self::Wire>> + Send + 'static {
    /// The attributes on the wire.
    type Wire: serde::de::DeserializeOwned + Send + 'static;
    /// `lists` or `segments`.
    const PATH: &'static str;
    /// The operation that reads them all (or filtered).
    const GET_ALL: Operation;
    /// The operation that reads one by id.
    const GET_ONE: Operation;
    /// The largest page Klaviyo gives.
    const PAGE_MAX: usize;
    /// Its name.
    fn name(&self) -> &str;
}

impl Group for List {
    type Wire = WireListAttributes;
    const PATH: &'static str = "lists";
    const GET_ALL: Operation = Operation::GetLists;
    const GET_ONE: Operation = Operation::GetList;
    const PAGE_MAX: usize = limits::LISTS_PAGE_MAX;
    fn name(&self) -> &str {
        &self.name
    }
}

impl Group for Segment {
    type Wire = WireSegmentAttributes;
    const PATH: &'static str = "segments";
    const GET_ALL: Operation = Operation::GetSegments;
    const GET_ONE: Operation = Operation::GetSegment;
    const PAGE_MAX: usize = limits::SEGMENTS_PAGE_MAX;
    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::klaviyo::operations::match_template;

    fn paths_agree<G: Group>() {
        assert_eq!(G::GET_ALL.method(), "GET");
        assert_eq!(G::GET_ONE.method(), "GET");
        assert_eq!(G::GET_ALL.path_template(), format!("/api/{}", G::PATH));
        assert_eq!(
            match_template(G::GET_ONE.path_template(), &format!("/api/{}/X1", G::PATH)),
            Some(vec!["X1"])
        );
    }

    #[test]
    fn lists_and_segments_are_read_at_their_operations_paths() {
        paths_agree::<List>();
        paths_agree::<Segment>();
    }
}
