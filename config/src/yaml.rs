//! YAML text → a small tree of positioned nodes.
//!
//! The decoder needs three things from YAML: the structure, the *source text* of every scalar
//! (so `release: 1.10` stays "1.10" instead of becoming the float 1.1), and a line/column for
//! every node and key (so each error points at the place to fix). saphyr gives all three when
//! its loader keeps scalars unparsed ("early parse" off) and builds `MarkedYaml` nodes. This
//! module is the only one that knows saphyr's types; everything after it reads [`Node`]s.
//! JSON needs nothing special: it is YAML.

use saphyr::{MarkedYaml, ScalarStyle, YamlData, YamlLoader};
use saphyr_parser::{Marker, Parser};

use crate::decoder::{child, item, Decoder};

/// A 1-based line and column in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    /// saphyr's markers have 1-based lines and 0-based columns; editors and compilers say 1:1.
    fn of(marker: &Marker) -> Pos {
        Pos {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// Every scalar keeps its source text; each field decides what the text means.
    /// `plain` is false for quoted and block scalars, which are always strings.
    Scalar {
        text: String,
        plain: bool,
    },
    List(Vec<Node>),
    /// Entries in file order. saphyr rejects duplicate keys while loading.
    Map(Vec<Entry>),
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: String,
    /// Where the key is written: unknown fields and bad names are reported here.
    pub key_pos: Pos,
    pub value: Node,
}

impl Node {
    fn null(pos: Pos) -> Node {
        Node {
            pos,
            kind: Kind::Scalar {
                text: String::new(),
                plain: true,
            },
        }
    }

    /// `key:` with no value, `~` and `null` (unquoted) all mean "nothing here".
    pub fn is_null(&self) -> bool {
        match &self.kind {
            Kind::Scalar { text, plain: true } => {
                matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL")
            }
            _ => false,
        }
    }

    /// The text of a non-null scalar.
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } if !self.is_null() => Some(text),
            _ => None,
        }
    }

    /// The value of `key` if this node is a mapping that has it (no errors reported).
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }

    /// The items if this node is a list, else nothing.
    pub fn items(&self) -> &[Node] {
        match &self.kind {
            Kind::List(items) => items,
            _ => &[],
        }
    }

    /// The keys if this node is a mapping.
    pub fn keys(&self) -> Option<Vec<&str>> {
        match &self.kind {
            Kind::Map(entries) => Some(entries.iter().map(|e| e.key.as_str()).collect()),
            _ => None,
        }
    }

    /// How the node looks to a person, for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::List(_) => "a list".into(),
            Kind::Map(_) => "a mapping".into(),
            Kind::Scalar { .. } if self.is_null() => "an empty value".into(),
            Kind::Scalar { text, .. } => format!("{text:?}"),
        }
    }
}

/// Parses `source` as exactly one YAML document. Syntax errors are reported to `d`.
pub(crate) fn load(source: &str, d: &mut Decoder) -> Option<Node> {
    let mut loader: YamlLoader<'_, MarkedYaml<'_>> = YamlLoader::default();
    loader.early_parse(false);
    let mut parser = Parser::new_from_str(source);
    let loaded = parser.load(&mut loader, true);
    // The parser reports syntax errors; the loader reports its own (duplicate keys, alias bombs).
    if let Some(e) = loaded.err().as_ref().or(loader.error()) {
        d.error(
            Pos::of(e.marker()),
            "",
            format!("YAML syntax error: {}", e.info()),
        );
        return None;
    }
    let docs = loader.into_documents();
    let Some(root) = docs.first() else {
        d.error(
            Pos { line: 1, column: 1 },
            "",
            "the config file is empty (it needs at least `listeners:` and `services:`)",
        );
        return None;
    };
    if let Some(extra) = docs.get(1) {
        d.error(
            Pos::of(&extra.span.start),
            "",
            "only one YAML document is allowed (remove the `---` separator and what follows it)",
        );
    }
    Some(convert(root, "", d))
}

fn convert(yaml: &MarkedYaml<'_>, path: &str, d: &mut Decoder) -> Node {
    let pos = Pos::of(&yaml.span.start);
    let kind = match &yaml.data {
        YamlData::Representation(text, style, tag) => {
            let mut plain = *style == ScalarStyle::Plain;
            if let Some(tag) = tag {
                if tag.is_yaml_core_schema() {
                    // `!!str 1.0` asks for a string; other core tags add nothing we use.
                    plain &= tag.suffix != "str";
                } else {
                    unsupported_tag(d, pos, path, &tag.to_string());
                }
            }
            Kind::Scalar {
                text: text.to_string(),
                plain,
            }
        }
        YamlData::Sequence(items) => Kind::List(
            items
                .iter()
                .enumerate()
                .map(|(i, node)| convert(node, &item(path, i), d))
                .collect(),
        ),
        YamlData::Mapping(map) => {
            let mut entries = Vec::with_capacity(map.len());
            for (key, value) in map {
                let key_pos = Pos::of(&key.span.start);
                let YamlData::Representation(text, ..) = &key.data else {
                    d.error(
                        key_pos,
                        path,
                        "a mapping key must be a plain name, not a list or mapping",
                    );
                    continue;
                };
                let value = convert(value, &child(path, text), d);
                entries.push(Entry {
                    key: text.to_string(),
                    key_pos,
                    value,
                });
            }
            Kind::Map(entries)
        }
        YamlData::Tagged(tag, inner) => {
            unsupported_tag(d, pos, path, &tag.to_string());
            return convert(inner, path, d);
        }
        // With early parse off the loader makes no `Value`s; an unknown alias is a `BadValue`.
        YamlData::Value(_) | YamlData::Alias(_) | YamlData::BadValue => return Node::null(pos),
    };
    Node { pos, kind }
}

fn unsupported_tag(d: &mut Decoder, pos: Pos, path: &str, tag: &str) {
    d.error(
        pos,
        path,
        format!("YAML tag {tag} is not supported (remove it)"),
    );
}
