"""The official SDK check of the emulator (issue 12): every Klaviyo operation klsync uses,
called through Klaviyo's official Python SDK (klaviyo-api, pinned in requirements.txt) against
the emulator. The SDK builds its requests from its own generated models (its shapes, its nulls,
its revision) and parses every response into its models, so a request shape the emulator
refuses, or a response the SDK cannot read, fails here.

Usage: python3 official_sdk_check.py BASE_URL API_KEY
Prints one line per operation and a JSON summary last; exits 1 if any operation failed.
"""

import json
import sys
import time

from klaviyo_api import KlaviyoAPI

base_url, api_key = sys.argv[1], sys.argv[2]
klaviyo = KlaviyoAPI(api_key, max_delay=5, max_retries=2, test_host=base_url)
results = {}


def call(operation, fn, *args, **kwargs):
    try:
        response = fn(*args, **kwargs)
        results[operation] = "ok"
        print(f"ok   {operation}", flush=True)
        return response
    except Exception as error:  # the SDK raises its ApiException, pydantic errors, ...
        detail = getattr(error, "body", None) or str(error)
        results[operation] = f"failed: {type(error).__name__}: {str(detail)[:600]}"
        print(f"FAIL {operation}: {results[operation]}", flush=True)
        return None


def data_id(response):
    if response is None:
        return None
    data = response.data if hasattr(response, "data") else response["data"]
    return data.id if hasattr(data, "id") else data["id"]


group = data_id(call("create_tag_group", klaviyo.Tags.create_tag_group,
                     {"data": {"type": "tag-group", "attributes": {"name": "sdk group", "exclusive": False}}}))
tag = data_id(call("create_tag", klaviyo.Tags.create_tag,
                   {"data": {"type": "tag", "attributes": {"name": "sdk tag"},
                             "relationships": {"tag-group": {"data": {"type": "tag-group", "id": group}}}}}))
call("update_tag_group", klaviyo.Tags.update_tag_group, group,
     {"data": {"type": "tag-group", "id": group, "attributes": {"name": "sdk group 2"}}})
call("update_tag", klaviyo.Tags.update_tag, tag,
     {"data": {"type": "tag", "id": tag, "attributes": {"name": "sdk tag 2"}}})
call("get_tag_groups", klaviyo.Tags.get_tag_groups)
call("get_tags", klaviyo.Tags.get_tags)
call("get_tag_ids_for_tag_group", klaviyo.Tags.get_tag_ids_for_tag_group, group)

lst = data_id(call("create_list", klaviyo.Lists.create_list,
                   {"data": {"type": "list", "attributes": {"name": "SDK list"}}}))
call("update_list", klaviyo.Lists.update_list, lst,
     {"data": {"type": "list", "id": lst, "attributes": {"name": "SDK list 2"}}})
call("get_list", klaviyo.Lists.get_list, lst)
call("get_lists", klaviyo.Lists.get_lists)

definition = {"condition_groups": [{"conditions": [{
    "type": "profile-property", "property": "properties['ltv']",
    "filter": {"type": "numeric", "operator": "greater-than", "value": 100}}]}]}
seg = data_id(call("create_segment", klaviyo.Segments.create_segment,
                   {"data": {"type": "segment", "attributes": {"name": "SDK segment", "definition": definition}}}))
call("update_segment", klaviyo.Segments.update_segment, seg,
     {"data": {"type": "segment", "id": seg, "attributes": {"name": "SDK segment 2"}}})
call("get_segment", klaviyo.Segments.get_segment, seg)
call("get_segments", klaviyo.Segments.get_segments)

call("tag_lists", klaviyo.Tags.tag_lists, tag, {"data": [{"type": "list", "id": lst}]})
call("tag_segments", klaviyo.Tags.tag_segments, tag, {"data": [{"type": "segment", "id": seg}]})
call("get_list_ids_for_tag", klaviyo.Tags.get_list_ids_for_tag, tag)
call("get_segment_ids_for_tag", klaviyo.Tags.get_segment_ids_for_tag, tag)
call("remove_tag_from_lists", klaviyo.Tags.remove_tag_from_lists, tag, {"data": [{"type": "list", "id": lst}]})
call("remove_tag_from_segments", klaviyo.Tags.remove_tag_from_segments, tag,
     {"data": [{"type": "segment", "id": seg}]})

profile = data_id(call("create_profile", klaviyo.Profiles.create_profile,
                       {"data": {"type": "profile", "attributes": {"email": "sdk@example.com",
                                                                   "properties": {"ltv": 120}}}}))
call("update_profile", klaviyo.Profiles.update_profile, profile,
     {"data": {"type": "profile", "id": profile, "attributes": {"properties": {"ltv": 130}}}})
call("create_or_update_profile", klaviyo.Profiles.create_or_update_profile,
     {"data": {"type": "profile", "attributes": {"email": "sdk2@example.com", "properties": {"ltv": 5}}}})
call("get_profile", klaviyo.Profiles.get_profile, profile)
call("get_profiles", klaviyo.Profiles.get_profiles, filter='equals(email,"sdk@example.com")')
call("add_profiles_to_list", klaviyo.Lists.add_profiles_to_list, lst, {"data": [{"type": "profile", "id": profile}]})
call("get_profiles_for_list", klaviyo.Lists.get_profiles_for_list, lst)
call("get_profile_ids_for_list", klaviyo.Lists.get_profile_ids_for_list, lst)
call("get_profile_ids_for_segment", klaviyo.Segments.get_profile_ids_for_segment, seg)
call("remove_profiles_from_list", klaviyo.Lists.remove_profiles_from_list, lst,
     {"data": [{"type": "profile", "id": profile}]})

job = data_id(call("bulk_import_profiles", klaviyo.Profiles.bulk_import_profiles, {"data": {
    "type": "profile-bulk-import-job",
    "attributes": {"profiles": {"data": [
        {"type": "profile", "attributes": {"email": "bulk1@example.com", "properties": {"ltv": 1}}},
        {"type": "profile", "attributes": {"email": "bulk2@example.com", "properties": {"ltv": 2}}}]}},
    "relationships": {"lists": {"data": [{"type": "list", "id": lst}]}}}}))
for _ in range(100):
    status = call("get_bulk_import_profiles_job", klaviyo.Profiles.get_bulk_import_profiles_job, job)
    state = status.data.attributes.status if status is not None else "failed"
    if state in ("complete", "cancelled", "failed"):
        break
    time.sleep(0.1)
call("get_errors_for_bulk_import_profiles_job", klaviyo.Profiles.get_errors_for_bulk_import_profiles_job, job)
call("get_profiles_for_bulk_import_profiles_job", klaviyo.Profiles.get_profiles_for_bulk_import_profiles_job, job)

call("delete_segment", klaviyo.Segments.delete_segment, seg)
call("delete_list", klaviyo.Lists.delete_list, lst)
call("delete_tag", klaviyo.Tags.delete_tag, tag)
call("delete_tag_group", klaviyo.Tags.delete_tag_group, group)

print(json.dumps(results, sort_keys=True))
sys.exit(0 if all(v == "ok" for v in results.values()) else 1)
