//! A span-keeping YAML reader: YAML text → `serde_json::Value` plus a [`SpanIndex`] that maps
//! every JSON pointer (instance path) to where its key and value were written.
//!
//! We build the tree from saphyr-parser's event stream instead of `saphyr::MarkedYaml` because
//! saphyr's mappings are hash maps: a duplicated key silently wins, and we must report it. The
//! reader is deliberately strict: only the JSON-compatible subset of YAML is accepted (string
//! keys, no aliases, no custom tags, one document), so what a user writes is what klsync sees.

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr::Scalar;
use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

/// Deeper nesting than this is refused: manifests are shallow, and the limit keeps every
/// recursive step (conversion, schema validation, drop) far from the stack's end.
pub const MAX_DEPTH: usize = 64;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

/// Where one node of the document was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpan {
    /// Where the value starts.
    pub value: Pos,
    /// Where its key starts, for mapping entries.
    pub key: Option<Pos>,
    /// Human path such as `lists[0].name` (empty for the document root).
    pub field: String,
}

/// JSON pointer → span, for every node of a document.
#[derive(Debug, Clone, Default)]
pub struct SpanIndex {
    spans: HashMap<String, NodeSpan>,
}

impl SpanIndex {
    /// The span recorded for `pointer`, if the node exists.
    pub fn get(&self, pointer: &str) -> Option<&NodeSpan> {
        self.spans.get(pointer)
    }

    /// This index for the document with the array items `removed` (`("/lists", 2)`) taken out:
    /// later items' pointers move down, and keep pointing at where they are written.
    pub fn without_items(&self, removed: &[(String, usize)]) -> SpanIndex {
        let spans = self
            .spans
            .iter()
            .filter_map(|(pointer, span)| {
                for (array, _) in removed {
                    let Some(rest) = pointer
                        .strip_prefix(array.as_str())
                        .and_then(|r| r.strip_prefix('/'))
                    else {
                        continue;
                    };
                    let (item, tail) = rest.split_once('/').map_or((rest, ""), |(i, t)| (i, t));
                    let Ok(item) = item.parse::<usize>() else {
                        continue;
                    };
                    let gone = |(a, _): &&(String, usize)| a == array;
                    if removed.iter().filter(gone).any(|(_, i)| *i == item) {
                        return None;
                    }
                    let before = removed
                        .iter()
                        .filter(gone)
                        .filter(|(_, i)| *i < item)
                        .count();
                    let tail = if tail.is_empty() {
                        String::new()
                    } else {
                        format!("/{tail}")
                    };
                    return Some((format!("{array}/{}{tail}", item - before), span.clone()));
                }
                Some((pointer.clone(), span.clone()))
            })
            .collect();
        SpanIndex { spans }
    }

    /// The nearest recorded ancestor (or the node itself) of `pointer`; the root always exists.
    pub fn nearest(&self, pointer: &str) -> NodeSpan {
        let mut current = pointer;
        loop {
            if let Some(span) = self.spans.get(current) {
                return span.clone();
            }
            match current.rfind('/') {
                Some(cut) => current = &current[..cut],
                None => {
                    return NodeSpan {
                        value: Pos { line: 1, column: 1 },
                        key: None,
                        field: String::new(),
                    };
                }
            }
        }
    }
}

/// A YAML document that could not be turned into a JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// Where the problem is.
    pub pos: Pos,
    /// Human path of the node, if known.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
    /// The other place involved (the first occurrence of a duplicated key).
    pub related: Option<Pos>,
}

/// Escape one JSON pointer segment (RFC 6901).
pub fn escape_segment(segment: &str) -> Cow<'_, str> {
    if segment.contains(['~', '/']) {
        Cow::Owned(segment.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(segment)
    }
}

/// Append a mapping key to a human path: `a.b`, or `a["odd key"]` when the key is not an
/// identifier.
fn push_field(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{key:?}]"),
    }
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        column: span.start.col() + 1,
    }
}

/// A container being built.
enum Frame {
    Seq {
        items: Vec<Value>,
        pointer: String,
        field: String,
    },
    Map {
        map: Map<String, Value>,
        pointer: String,
        field: String,
        /// Key waiting for its value.
        pending: Option<(String, Pos)>,
        key_positions: HashMap<String, Pos>,
    },
}

/// Parse one YAML document. An empty document (or one holding only comments) is `Value::Null`.
pub fn parse(text: &str) -> Result<(Value, SpanIndex), YamlError> {
    if let Some(err) = forbidden_character(text) {
        return Err(err);
    }
    let mut index = SpanIndex::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Value> = None;
    let mut documents = 0usize;

    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|err| YamlError {
            pos: Pos {
                line: err.marker().line(),
                column: err.marker().col() + 1,
            },
            field: String::new(),
            message: format!("YAML syntax error: {}", err.info()),
            hint: syntax_hint(err.info()),
            related: None,
        })?;
        let pos = pos_of(&span);
        let node = match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {
                continue;
            }
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError {
                        pos,
                        field: String::new(),
                        message: "a manifest file holds one YAML document, found a second one"
                            .into(),
                        hint: Some("split the documents into separate files".into()),
                        related: None,
                    });
                }
                continue;
            }
            Event::Alias(_) => {
                return Err(YamlError {
                    pos,
                    field: current_field(&stack),
                    message: "YAML aliases (`*name`) are not supported".into(),
                    hint: Some("write the value out in full; manifests stay explicit".into()),
                    related: None,
                });
            }
            Event::Scalar(text, style, _anchor, tag) => {
                if let Some(Frame::Map {
                    pending: pending @ None,
                    field,
                    key_positions,
                    ..
                }) = stack.last_mut()
                {
                    let key = scalar_key(&text, style, tag.as_deref(), pos, field)?;
                    if let Some(first) = key_positions.get(&key) {
                        return Err(YamlError {
                            pos,
                            field: push_field(field, &key),
                            message: format!("duplicate key `{key}`"),
                            hint: Some(format!(
                                "`{key}` is already set at line {}; keep one of them",
                                first.line
                            )),
                            related: Some(*first),
                        });
                    }
                    key_positions.insert(key.clone(), pos);
                    *pending = Some((key, pos));
                    continue;
                }
                let (pointer, field, key) = child_location(&stack);
                let value = scalar_value(text, style, tag.as_deref(), pos, &field)?;
                index.spans.insert(
                    pointer,
                    NodeSpan {
                        value: pos,
                        key,
                        field,
                    },
                );
                value
            }
            Event::SequenceStart(_, ref tag) | Event::MappingStart(_, ref tag) => {
                let is_seq = matches!(event, Event::SequenceStart(..));
                let (pointer, field, key) = child_location_checked(&stack, pos)?;
                if let Some(tag) = tag.as_deref() {
                    let allowed = tag.is_yaml_core_schema()
                        && tag.suffix == if is_seq { "seq" } else { "map" };
                    if !allowed {
                        return Err(tag_error(tag, pos, &field));
                    }
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(YamlError {
                        pos,
                        field,
                        message: format!("nesting deeper than {MAX_DEPTH} levels"),
                        hint: Some("manifests are shallow; check the indentation".into()),
                        related: None,
                    });
                }
                index.spans.insert(
                    pointer.clone(),
                    NodeSpan {
                        value: pos,
                        key,
                        field: field.clone(),
                    },
                );
                stack.push(if is_seq {
                    Frame::Seq {
                        items: Vec::new(),
                        pointer,
                        field,
                    }
                } else {
                    Frame::Map {
                        map: Map::new(),
                        pointer,
                        field,
                        pending: None,
                        key_positions: HashMap::new(),
                    }
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { items, .. }) => Value::Array(items),
                _ => unreachable_structure(pos)?,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map { map, .. }) => Value::Object(map),
                _ => unreachable_structure(pos)?,
            },
        };
        attach(&mut stack, &mut root, node);
    }
    Ok((root.unwrap_or(Value::Null), index))
}

/// The parser guarantees balanced events; if that ever breaks, report it instead of panicking.
fn unreachable_structure(pos: Pos) -> Result<Value, YamlError> {
    Err(YamlError {
        pos,
        field: String::new(),
        message: "unbalanced YAML structure".into(),
        hint: None,
        related: None,
    })
}

fn attach(stack: &mut [Frame], root: &mut Option<Value>, node: Value) {
    match stack.last_mut() {
        None => *root = Some(node),
        Some(Frame::Seq { items, .. }) => items.push(node),
        Some(Frame::Map { map, pending, .. }) => {
            if let Some((key, _)) = pending.take() {
                map.insert(key, node);
            }
        }
    }
}

fn current_field(stack: &[Frame]) -> String {
    child_location(stack).1
}

/// Pointer, human path and key position of the node about to be attached to the top frame.
fn child_location(stack: &[Frame]) -> (String, String, Option<Pos>) {
    match stack.last() {
        None => (String::new(), String::new(), None),
        Some(Frame::Seq {
            items,
            pointer,
            field,
        }) => (
            format!("{pointer}/{}", items.len()),
            format!("{field}[{}]", items.len()),
            None,
        ),
        Some(Frame::Map {
            pointer,
            field,
            pending,
            ..
        }) => match pending {
            Some((key, key_pos)) => (
                format!("{pointer}/{}", escape_segment(key)),
                push_field(field, key),
                Some(*key_pos),
            ),
            None => (pointer.clone(), field.clone(), None),
        },
    }
}

/// Like [`child_location`], but a container in key position is refused.
fn child_location_checked(
    stack: &[Frame],
    pos: Pos,
) -> Result<(String, String, Option<Pos>), YamlError> {
    if let Some(Frame::Map {
        pending: None,
        field,
        ..
    }) = stack.last()
    {
        return Err(YamlError {
            pos,
            field: field.clone(),
            message: "a mapping key must be a plain string, not a list or mapping".into(),
            hint: None,
            related: None,
        });
    }
    Ok(child_location(stack))
}

fn tag_error(tag: &saphyr_parser::Tag, pos: Pos, field: &str) -> YamlError {
    YamlError {
        pos,
        field: field.to_owned(),
        message: format!(
            "YAML tag `{}{}` is not supported here",
            tag.handle, tag.suffix
        ),
        hint: Some("remove the tag; quote the value if it must be a string".into()),
        related: None,
    }
}

fn scalar_key(
    text: &str,
    style: ScalarStyle,
    tag: Option<&saphyr_parser::Tag>,
    pos: Pos,
    parent: &str,
) -> Result<String, YamlError> {
    let quoted = style != ScalarStyle::Plain;
    if let Some(tag) = tag
        && !(tag.is_yaml_core_schema() && tag.suffix == "str")
    {
        return Err(tag_error(tag, pos, parent));
    }
    if !quoted && tag.is_none() {
        let kind = match Scalar::parse_from_cow(Cow::Borrowed(text)) {
            Scalar::String(_) => None,
            Scalar::Null => Some("null"),
            Scalar::Boolean(_) => Some("a boolean"),
            Scalar::Integer(_) | Scalar::FloatingPoint(_) => Some("a number"),
        };
        if let Some(kind) = kind {
            return Err(YamlError {
                pos,
                field: parent.to_owned(),
                message: format!("mapping key `{text}` is {kind}, keys must be strings"),
                hint: Some(format!("quote it: \"{text}\"")),
                related: None,
            });
        }
    }
    Ok(text.to_owned())
}

fn scalar_value(
    text: Cow<'_, str>,
    style: ScalarStyle,
    tag: Option<&saphyr_parser::Tag>,
    pos: Pos,
    field: &str,
) -> Result<Value, YamlError> {
    if let Some(tag) = tag
        && !tag.is_yaml_core_schema()
    {
        return Err(tag_error(tag, pos, field));
    }
    let shown = text.chars().take(40).collect::<String>();
    let owned_tag = tag.map(|t| Cow::Owned(t.clone()));
    let scalar = Scalar::parse_from_cow_and_metadata(text, style, owned_tag.as_ref());
    let bad = |message: String| YamlError {
        pos,
        field: field.to_owned(),
        message,
        hint: None,
        related: None,
    };
    match scalar {
        None => Err(bad(format!("`{shown}` does not match its YAML tag"))),
        Some(Scalar::Null) => Ok(Value::Null),
        Some(Scalar::Boolean(b)) => Ok(Value::Bool(b)),
        Some(Scalar::Integer(i)) => Ok(Value::Number(i.into())),
        Some(Scalar::FloatingPoint(f)) => Number::from_f64(f.into_inner())
            .map(Value::Number)
            .ok_or_else(|| bad(format!("`{shown}` is not a finite number"))),
        Some(Scalar::String(s)) => Ok(Value::String(s.into_owned())),
    }
}

/// The first character YAML allows nowhere in a stream (YAML 1.2 `c-printable`): C0 controls
/// other than tab, line feed and carriage return, DEL, C1 controls other than NEL, U+FFFE and
/// U+FFFF. Found before parsing, because the parser reports them confusingly (a NUL inside
/// quotes read as "unexpected end of stream").
fn forbidden_character(text: &str) -> Option<YamlError> {
    let mut line = 1;
    let mut column = 1;
    for ch in text.chars() {
        let forbidden = match ch {
            '\t' | '\n' | '\r' | '\u{85}' => false,
            '\u{FFFE}' | '\u{FFFF}' => true,
            ch => ch.is_control(),
        };
        if forbidden {
            let code = format!("U+{:04X}", u32::from(ch));
            let message = if ch == '\0' {
                format!(
                    "the file contains a NUL character ({code}); YAML allows no control characters"
                )
            } else {
                format!(
                    "the file contains the control character {code}; YAML allows no control characters"
                )
            };
            return Some(YamlError {
                pos: Pos { line, column },
                field: String::new(),
                message,
                hint: Some(
                    "remove it: it is invisible in most editors (NULs often mean the file was saved as UTF-16; manifests are UTF-8)"
                        .into(),
                ),
                related: None,
            });
        }
        if ch == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    None
}

/// Plain-language advice for the scanner errors people actually hit.
fn syntax_hint(info: &str) -> Option<String> {
    // Whole words: "unprintable" contains "tab".
    let mentions = |word: &str| {
        info.split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| w.eq_ignore_ascii_case(word))
    };
    if info.contains("recursion limit") {
        Some("nesting is far too deep; manifests are shallow, check the brackets".into())
    } else if mentions("tab") || mentions("tabs") {
        Some("YAML indentation must use spaces, not tabs".into())
    } else if info.contains("mapping values are not allowed") {
        Some("a `:` inside a value needs quotes, or the indentation is off".into())
    } else if info.contains("did not find expected") || info.contains("while parsing") {
        Some("check the indentation and that quotes and brackets are closed".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_and_indexes_keys_and_values() {
        let (value, index) = parse("lists:\n  - id: vip\n    name: \"VIP\"\n").unwrap();
        assert_eq!(value, json!({"lists": [{"id": "vip", "name": "VIP"}]}));
        let name = index.get("/lists/0/name").unwrap();
        assert_eq!(name.key, Some(Pos { line: 3, column: 5 }));
        assert_eq!(
            name.value,
            Pos {
                line: 3,
                column: 11
            }
        );
        assert_eq!(name.field, "lists[0].name");
        assert_eq!(index.nearest("/lists/0/nope").field, "lists[0]");
    }

    #[test]
    fn rejects_duplicate_keys_naming_the_first() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.message, "duplicate key `a`");
        assert_eq!(err.pos, Pos { line: 3, column: 1 });
        assert_eq!(err.related, Some(Pos { line: 1, column: 1 }));
    }

    #[test]
    fn rejects_aliases_tags_and_non_string_keys() {
        assert!(
            parse("a: &x [1]\nb: *x\n")
                .unwrap_err()
                .message
                .contains("aliases")
        );
        assert!(parse("a: !custom 1\n").unwrap_err().message.contains("tag"));
        assert!(
            parse("1: a\n")
                .unwrap_err()
                .message
                .contains("keys must be strings")
        );
        assert!(
            parse("? [a]\n: b\n")
                .unwrap_err()
                .message
                .contains("plain string")
        );
        assert_eq!(parse("\"1\": a\n").unwrap().0, json!({"1": "a"}));
        assert_eq!(parse("a: !!str 12\n").unwrap().0, json!({"a": "12"}));
    }

    #[test]
    fn yaml_1_2_scalars() {
        let (value, _) = parse("a: yes\nb: 0x10\nc: ~\nd: 2.5\ne: '5'\n").unwrap();
        assert_eq!(
            value,
            json!({"a": "yes", "b": 16, "c": null, "d": 2.5, "e": "5"})
        );
    }

    /// Issue 11 finding 8: a NUL inside quotes was reported as "unexpected end of stream".
    #[test]
    fn control_characters_are_named_where_they_are() {
        for (text, line, column, code) in [
            (
                "lists:\n  - id: a\n    name: \"A\0B\"\n",
                3,
                13,
                "NUL character (U+0000)",
            ),
            (
                "lists:\n  - id: a\n    name: 'A\0B'\n",
                3,
                13,
                "NUL character (U+0000)",
            ),
            ("a: b\u{1}\n", 1, 5, "control character U+0001"),
            ("a: |\n  x\u{7f}\n", 2, 4, "control character U+007F"),
            ("a: \"é\u{9b}\"\n", 1, 6, "control character U+009B"),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!((err.pos.line, err.pos.column), (line, column), "{text:?}");
            assert!(err.message.contains(code), "{text:?}: {}", err.message);
            assert!(!err.hint.unwrap().contains("tabs"), "{text:?}");
        }
        // Escapes are text, and tabs, CR and NEL are allowed.
        assert!(parse("a: \"A\\0B\"\nb: \"\t\"\r\nc: d\u{85}\n").is_ok());
    }

    #[test]
    fn syntax_errors_have_positions_and_tabs_a_hint() {
        let err = parse("a:\n\t- b\n").unwrap_err();
        assert_eq!(err.pos.line, 2);
        assert!(err.hint.unwrap().contains("tabs"));
    }

    #[test]
    fn deep_nesting_and_multiple_documents_are_refused() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(&deep).unwrap_err().message.contains("nesting"));
        assert!(
            parse("a: 1\n---\nb: 2\n")
                .unwrap_err()
                .message
                .contains("second")
        );
    }

    #[test]
    fn items_taken_out_move_the_later_pointers_down() {
        let (_, index) = parse("lists:\n  - id: a\n  - id: b\n  - id: c\nqueries: {}\n").unwrap();
        let moved = index.without_items(&[("/lists".into(), 0)]);
        assert_eq!(moved.get("/lists/0/id").map(|s| s.value.line), Some(3));
        assert_eq!(moved.get("/lists/1/id").map(|s| s.value.line), Some(4));
        assert!(moved.get("/lists/2").is_none());
        assert_eq!(
            moved.get("/queries").map(|s| s.key.map(|k| k.line)),
            Some(Some(5))
        );
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(parse("# only a comment\n").unwrap().0, Value::Null);
    }
}
