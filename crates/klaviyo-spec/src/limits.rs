//! Klaviyo's published limits and profile field names, written down once: the client enforces
//! them, the manifest checks and a plan's request counts read them, and the emulator answers by
//! them. `[spec]` marks a figure from Klaviyo's API reference.

/// At most this many tags on one list or segment.
pub const MAX_TAGS_PER_RESOURCE: usize = 100;
/// At most this many tags in an account.
pub const MAX_TAGS_PER_ACCOUNT: usize = 500;
/// At most this many tag groups in an account, including the default group.
pub const MAX_TAG_GROUPS_PER_ACCOUNT: usize = 50;

/// `GET /profiles` accepts at most this many values in one `any(...)` filter.
pub const PROFILE_FILTER_BATCH: usize = 100;
/// Max profile ids per list add/remove call [spec].
pub const LIST_MEMBERS_PER_CALL: usize = 1000;
/// The largest `page[size]` of lists [spec].
pub const LISTS_PAGE_MAX: usize = 10;
/// The largest `page[size]` of segments [spec].
pub const SEGMENTS_PAGE_MAX: usize = 10;
/// The largest `page[size]` of tags [spec].
pub const TAGS_PAGE_MAX: usize = 50;
/// The largest `page[size]` of tag groups [spec].
pub const TAG_GROUPS_PAGE_MAX: usize = 25;
/// The largest `page[size]` of profiles, of a list's or a segment's members, and of a bulk
/// import job's profiles and errors [spec].
pub const PROFILES_PAGE_MAX: usize = 100;
/// Max profiles per bulk import job [spec].
pub const BULK_IMPORT_MAX_PROFILES: usize = 10_000;
/// Max bulk import request size [spec: 5 MB]; decimal megabytes, the stricter reading.
pub const BULK_IMPORT_MAX_BYTES: usize = 5_000_000;
/// Max body of profile create/update/upsert [spec: 100 KB], decimal.
pub const PROFILE_MAX_BYTES: usize = 100_000;

/// Profile attributes that identify a profile; each is unique across the account.
pub const PROFILE_IDENTIFIERS: &[&str] = &["email", "phone_number", "external_id"];
/// Profile attributes that hold a string (or null).
pub const PROFILE_STRING_FIELDS: &[&str] = &[
    "email",
    "phone_number",
    "external_id",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
];
/// Profile attributes Klaviyo owns besides [`PROFILE_STRING_FIELDS`].
const OTHER_PROFILE_ATTRIBUTES: &[&str] = &[
    "id",
    "anonymous_id",
    "location",
    "address1",
    "address2",
    "city",
    "country",
    "region",
    "zip",
    "timezone",
    "latitude",
    "longitude",
    "ip",
    "properties",
    "subscriptions",
    "predictive_analytics",
    "created",
    "updated",
    "last_event_date",
];

/// Whether `name` (lower case) is a profile attribute Klaviyo owns, which a custom property must
/// not shadow.
pub fn is_profile_attribute(name: &str) -> bool {
    PROFILE_STRING_FIELDS.contains(&name) || OTHER_PROFILE_ATTRIBUTES.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_attributes_are_klaviyos_and_custom_names_are_not() {
        for name in [
            "id",
            "email",
            "first_name",
            "image",
            "location",
            "last_event_date",
        ] {
            assert!(is_profile_attribute(name), "{name}");
        }
        for name in ["plan", "lifetime_value", "Email", ""] {
            assert!(!is_profile_attribute(name), "{name}");
        }
    }

    #[test]
    fn identifiers_are_string_fields() {
        for name in PROFILE_IDENTIFIERS {
            assert!(PROFILE_STRING_FIELDS.contains(name), "{name}");
        }
    }
}
