//! What a resource change sends to Klaviyo, typed per kind ([`Payload`]).
//!
//! A change's `fields` show it to people (before and after, by field name, as JSON); its
//! payload is what the executor sends. Both are made by `diff` from the same values, so they
//! agree; the executor reads only the payload, so a saved plan whose payload is not what its
//! change needs is refused when it is loaded ([`Change::payload_problem`]) instead of being
//! sent with a default in place of a value it cannot read.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Action, Change, ChangeKind, FieldChange};
use crate::manifest::OptInProcess;

/// What a resource change sends to Klaviyo. In a saved plan, e.g.
/// `{"create": {"kind": "list", "name": "VIP", "opt_in_process": "double_opt_in"}}` or
/// `{"update": {"kind": "segment", "is_starred": true}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    /// A new resource (a create, or the create half of a replace): everything it gets.
    Create(NewResource),
    /// An existing resource (an update or adoption): only what changes in Klaviyo.
    Update(ResourceEdit),
}

/// Every attribute of a resource klsync creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum NewResource {
    /// A tag group.
    TagGroup {
        /// Its name.
        name: String,
        /// Whether a list or segment may carry only one of its tags (fixed once created).
        exclusive: bool,
    },
    /// A tag.
    Tag {
        /// Its name.
        name: String,
        /// The name of its tag group; `null` for Klaviyo's default group.
        group: Option<String>,
    },
    /// A list.
    List {
        /// Its name.
        name: String,
        /// Its opt-in process; `null` leaves it to Klaviyo's default.
        opt_in_process: Option<OptInProcess>,
    },
    /// A segment.
    Segment {
        /// Its name.
        name: String,
        /// Its definition as Klaviyo takes it (lists this plan creates are placeholders until
        /// they exist; see [`super::references`]).
        definition: Value,
        /// Whether it is starred.
        is_starred: bool,
    },
}

/// The attributes of an existing resource to change; absent ones are left as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResourceEdit {
    /// A tag group (`exclusive` cannot change).
    TagGroup {
        /// A new name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// A tag (its group cannot change: that is a replace).
    Tag {
        /// A new name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// A list.
    List {
        /// A new name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// A new opt-in process.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        opt_in_process: Option<OptInProcess>,
    },
    /// A segment.
    Segment {
        /// A new name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// A new definition (see [`NewResource::Segment`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        definition: Option<Value>,
        /// Starred or not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_starred: Option<bool>,
    },
}

impl NewResource {
    /// The kind of resource it is.
    pub fn kind(&self) -> ChangeKind {
        match self {
            NewResource::TagGroup { .. } => ChangeKind::TagGroup,
            NewResource::Tag { .. } => ChangeKind::Tag,
            NewResource::List { .. } => ChangeKind::List,
            NewResource::Segment { .. } => ChangeKind::Segment,
        }
    }

    /// The change's `fields` for creating it: every attribute, from `null`. The list's opt-in
    /// process is shown only when the manifest sets one.
    pub fn fields(&self) -> Vec<FieldChange> {
        let created = |field: &str, after: Value| FieldChange {
            field: field.to_owned(),
            before: Value::Null,
            after,
        };
        match self {
            NewResource::TagGroup { name, exclusive } => vec![
                created("name", json!(name)),
                created("exclusive", json!(exclusive)),
            ],
            NewResource::Tag { name, group } => {
                vec![created("name", json!(name)), created("group", json!(group))]
            }
            NewResource::List {
                name,
                opt_in_process,
            } => std::iter::once(created("name", json!(name)))
                .chain(opt_in_process.map(|opt_in| created("opt_in_process", json!(opt_in))))
                .collect(),
            NewResource::Segment {
                name,
                definition,
                is_starred,
            } => vec![
                created("name", json!(name)),
                created("definition", definition.clone()),
                created("is_starred", json!(is_starred)),
            ],
        }
    }
}

impl ResourceEdit {
    /// The kind of resource it changes.
    pub fn kind(&self) -> ChangeKind {
        match self {
            ResourceEdit::TagGroup { .. } => ChangeKind::TagGroup,
            ResourceEdit::Tag { .. } => ChangeKind::Tag,
            ResourceEdit::List { .. } => ChangeKind::List,
            ResourceEdit::Segment { .. } => ChangeKind::Segment,
        }
    }

    /// The names of the attributes it writes, as Klaviyo's answer and `fields` spell them.
    pub fn written(&self) -> Vec<&'static str> {
        let set = |name: &'static str, present: bool| present.then_some(name);
        match self {
            ResourceEdit::TagGroup { name } | ResourceEdit::Tag { name } => {
                set("name", name.is_some()).into_iter().collect()
            }
            ResourceEdit::List {
                name,
                opt_in_process,
            } => [
                set("name", name.is_some()),
                set("opt_in_process", opt_in_process.is_some()),
            ]
            .into_iter()
            .flatten()
            .collect(),
            ResourceEdit::Segment {
                name,
                definition,
                is_starred,
            } => [
                set("name", name.is_some()),
                set("definition", definition.is_some()),
                set("is_starred", is_starred.is_some()),
            ]
            .into_iter()
            .flatten()
            .collect(),
        }
    }
}

impl Payload {
    /// The segment definition it sends, if any.
    pub fn definition_mut(&mut self) -> Option<&mut Value> {
        match self {
            Payload::Create(NewResource::Segment { definition, .. }) => Some(definition),
            Payload::Update(ResourceEdit::Segment { definition, .. }) => definition.as_mut(),
            _ => None,
        }
    }

    /// The segment definition it sends, if any.
    pub fn definition(&self) -> Option<&Value> {
        match self {
            Payload::Create(NewResource::Segment { definition, .. }) => Some(definition),
            Payload::Update(ResourceEdit::Segment { definition, .. }) => definition.as_ref(),
            _ => None,
        }
    }
}

impl Change {
    /// Why the change's payload cannot be what its action and kind need, or `None` when it is.
    /// A create or replace carries [`Payload::Create`] of its kind, an update or adoption
    /// [`Payload::Update`] of its kind, and a destroy, attach or detach none.
    pub fn payload_problem(&self) -> Option<String> {
        let what = format!("{} {}", self.action.as_str(), self.address);
        let wanted = match self.action {
            Action::Create | Action::Replace => Some("create"),
            Action::Update | Action::Adopt => Some("update"),
            Action::Destroy | Action::Attach | Action::Detach => None,
        };
        let (found, kind) = match &self.payload {
            None => (None, None),
            Some(Payload::Create(new)) => (Some("create"), Some(new.kind())),
            Some(Payload::Update(edit)) => (Some("update"), Some(edit.kind())),
        };
        match (wanted, found) {
            (None, None) => None,
            (None, Some(found)) => Some(format!(
                "{what}: a {} carries no payload, but it has a `{found}` payload",
                self.action.as_str()
            )),
            (Some(wanted), None) => Some(format!(
                "{what}: it has no payload; it needs a `{wanted}` payload for a {}",
                kind_name(self.kind)
            )),
            (Some(wanted), Some(found)) if wanted != found => Some(format!(
                "{what}: it has a `{found}` payload; it needs a `{wanted}` payload"
            )),
            (Some(_), Some(_)) => kind.filter(|kind| *kind != self.kind).map(|kind| {
                format!(
                    "{what}: its payload is for a {}, but the change is about a {}",
                    kind_name(kind),
                    kind_name(self.kind)
                )
            }),
        }
    }
}

/// `tag group`, `list`, ... as a payload's `kind` is spelt, with spaces.
fn kind_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::TagGroup => "tag group",
        ChangeKind::Tag => "tag",
        ChangeKind::List => "list",
        ChangeKind::Segment => "segment",
        ChangeKind::TagLink => "tag link",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_tagged_by_action_then_kind() {
        let create = Payload::Create(NewResource::List {
            name: "VIP".into(),
            opt_in_process: Some(OptInProcess::DoubleOptIn),
        });
        assert_eq!(
            serde_json::to_value(&create).unwrap(),
            json!({"create": {"kind": "list", "name": "VIP", "opt_in_process": "double_opt_in"}})
        );
        let update = Payload::Update(ResourceEdit::Segment {
            name: None,
            definition: None,
            is_starred: Some(true),
        });
        let text = serde_json::to_value(&update).unwrap();
        assert_eq!(
            text,
            json!({"update": {"kind": "segment", "is_starred": true}})
        );
        assert_eq!(serde_json::from_value::<Payload>(text).unwrap(), update);
    }

    #[test]
    fn a_payload_missing_what_its_kind_needs_does_not_parse() {
        let bad = [
            // An opt-in process Klaviyo does not have.
            json!({"create": {"kind": "list", "name": "VIP", "opt_in_process": "triple"}}),
            // A tag group without `exclusive`.
            json!({"create": {"kind": "tag_group", "name": "G"}}),
            // A field of another kind.
            json!({"update": {"kind": "tag", "definition": {}}}),
            json!({"update": {"kind": "flow"}}),
        ];
        for value in bad {
            assert!(
                serde_json::from_value::<Payload>(value.clone()).is_err(),
                "{value}"
            );
        }
    }

    #[test]
    fn create_fields_show_every_attribute() {
        let list = NewResource::List {
            name: "VIP".into(),
            opt_in_process: None,
        };
        let fields = list.fields();
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].field, "name");
        let tag = NewResource::Tag {
            name: "t".into(),
            group: None,
        };
        assert_eq!(tag.fields()[1].after, Value::Null);
    }

    #[test]
    fn a_payload_must_fit_the_change() {
        let mut change = Change::example("list.vip", ChangeKind::List, Action::Create);
        let problem = change.payload_problem().unwrap();
        assert!(
            problem.contains("create list.vip: it has no payload"),
            "{problem}"
        );
        change.payload = Some(Payload::Create(NewResource::Tag {
            name: "t".into(),
            group: None,
        }));
        let problem = change.payload_problem().unwrap();
        assert!(problem.contains("its payload is for a tag"), "{problem}");
        change.payload = Some(Payload::Update(ResourceEdit::List {
            name: None,
            opt_in_process: None,
        }));
        assert!(
            change
                .payload_problem()
                .unwrap()
                .contains("`update` payload")
        );
        change.action = Action::Adopt;
        assert_eq!(change.payload_problem(), None);
        change.action = Action::Destroy;
        assert!(
            change
                .payload_problem()
                .unwrap()
                .contains("carries no payload")
        );
        change.payload = None;
        assert_eq!(change.payload_problem(), None);
    }
}
