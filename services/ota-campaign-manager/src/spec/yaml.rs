//! A campaign file read from YAML events into a tree of its own, in one pass.
//!
//! Building serde's `Value` would lose positions and the text of scalars YAML
//! reads as numbers, and it materialises every alias: a file of a few
//! kilobytes with nested anchors expands to millions of nodes. Here each node
//! keeps where it was written and its text as written, an alias shares the
//! node of its anchor instead of copying it, and the size the document would
//! have with every alias expanded is counted as the events arrive, so a file
//! past [`MAX_NODES`] is refused before anything of that size exists.
//! Merge keys (`<<`) are resolved here too, within the same budget.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use super::{path_string, Seg};

/// Most nodes a campaign file may have once its aliases are expanded: ten
/// times what the largest campaign (1,000 rules) needs, and far below what
/// would cost noticeable time or memory.
pub const MAX_NODES: u64 = 100_000;
/// Deepest nesting of lists and mappings, aliases expanded; a campaign needs 4.
pub const MAX_DEPTH: usize = 64;

/// A 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    fn of(m: saphyr_parser::Marker) -> Pos {
        Pos {
            line: u32::try_from(m.line()).unwrap_or(u32::MAX),
            column: u32::try_from(m.col() + 1).unwrap_or(u32::MAX),
        }
    }
}

pub(crate) struct Node {
    /// Where the node starts (at its anchor or tag, when it has one).
    pub at: Pos,
    /// A tag that is not one of the core schema's, which no field accepts.
    pub tag: Option<String>,
    pub kind: Kind,
}

pub(crate) enum Kind {
    Scalar(Scalar),
    Seq(Vec<Arc<Node>>),
    Map(Vec<(Arc<Node>, Arc<Node>)>),
}

pub(crate) struct Scalar {
    /// The scalar's content, for a plain scalar exactly as written.
    pub text: String,
    pub value: Resolved,
    pub style: ScalarStyle,
    /// Byte range of the whole scalar in the file, properties included.
    pub bytes: (usize, usize),
}

/// What a scalar means under YAML's core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Resolved {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str,
}

impl Node {
    pub fn scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            Kind::Scalar(s) if self.tag.is_none() => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        self.scalar().is_some_and(|s| s.value == Resolved::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        self.scalar()
            .filter(|s| s.value == Resolved::Str)
            .map(|s| s.text.as_str())
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self.scalar()?.value {
            Resolved::Int(i) => Some(i as f64),
            Resolved::Float(f) => Some(f),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i128> {
        match self.scalar()?.value {
            Resolved::Int(i) => Some(i),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Arc<Node>]> {
        match &self.kind {
            Kind::Seq(items) if self.tag.is_none() => Some(items),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Arc<Node>, Arc<Node>)]> {
        match &self.kind {
            Kind::Map(entries) if self.tag.is_none() => Some(entries),
            _ => None,
        }
    }

    /// The value of a string key of a mapping.
    pub fn get(&self, key: &str) -> Option<&Arc<Node>> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
}

/// A problem that keeps the document from being read at all.
pub(crate) struct ReadError {
    pub path: String,
    pub message: String,
    pub at: Option<Pos>,
}

impl ReadError {
    fn at(at: Pos, message: String) -> Self {
        ReadError {
            path: String::new(),
            message,
            at: Some(at),
        }
    }
}

/// Reads the file's single document; `None` when it holds none.
pub(crate) fn read(text: &str) -> Result<Option<Arc<Node>>, Vec<ReadError>> {
    let mut b = Builder {
        cursor: Cursor::new(text),
        anchors: HashMap::new(),
        stack: Vec::new(),
        root: None,
        documents: 0,
        nodes: 0,
        errors: Vec::new(),
    };
    for event in Parser::new_from_str(text) {
        let (event, span) =
            event.map_err(|e| vec![ReadError::at(Pos::of(*e.marker()), e.info().to_owned())])?;
        b.event(event, span).map_err(|e| vec![e])?;
    }
    if b.errors.is_empty() {
        Ok(b.root)
    } else {
        Err(b.errors)
    }
}

struct Anchored {
    node: Arc<Node>,
    /// Nodes it stands for, aliases within it expanded.
    size: u64,
    /// Levels of nesting below it.
    height: usize,
}

struct Frame {
    at: Pos,
    tag: Option<String>,
    anchor: usize,
    /// The node count when it opened, to learn its expanded size at its end.
    nodes_before: u64,
    height: usize,
    /// How its parent reaches it, for messages.
    seg: Option<Seg>,
    body: Body,
}

enum Body {
    Seq(Vec<Arc<Node>>),
    Map {
        entries: Vec<(Arc<Node>, Arc<Node>)>,
        key: Option<Arc<Node>>,
    },
}

struct Builder<'t> {
    cursor: Cursor<'t>,
    anchors: HashMap<usize, Anchored>,
    stack: Vec<Frame>,
    root: Option<Arc<Node>>,
    documents: usize,
    /// Nodes so far, every alias counted as the nodes it stands for.
    nodes: u64,
    /// Duplicate keys and bad merges: all of them are reported.
    errors: Vec<ReadError>,
}

impl Builder<'_> {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), ReadError> {
        let at = Pos::of(span.start);
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(ReadError::at(
                        at,
                        "the file holds more than one YAML document; a campaign file is one".into(),
                    ));
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, at)?;
                let (value, tag) = resolve(&text, style, tag.as_deref());
                let bytes = (
                    self.cursor.byte(span.start.index()),
                    self.cursor.byte(span.end.index()),
                );
                let node = Arc::new(Node {
                    at,
                    tag,
                    kind: Kind::Scalar(Scalar {
                        text: text.into_owned(),
                        value,
                        style,
                        bytes,
                    }),
                });
                self.remember(anchor, &node, 1, 0);
                self.place(node, 0);
            }
            Event::SequenceStart(anchor, tag) => {
                self.open(at, anchor, tag.as_deref(), Body::Seq(Vec::new()))?
            }
            Event::MappingStart(anchor, tag) => self.open(
                at,
                anchor,
                tag.as_deref(),
                Body::Map {
                    entries: Vec::new(),
                    key: None,
                },
            )?,
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Alias(id) => {
                let Some(a) = self.anchors.get(&id) else {
                    return Err(ReadError::at(
                        at,
                        "an alias refers to the node it is part of".into(),
                    ));
                };
                let (node, size, height) = (a.node.clone(), a.size, a.height);
                self.count(size, at)?;
                if self.stack.len() + height > MAX_DEPTH {
                    return Err(too_deep(at));
                }
                self.place(node, height);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
        Ok(())
    }

    fn count(&mut self, n: u64, at: Pos) -> Result<(), ReadError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(ReadError::at(
                at,
                format!(
                    "the file has more than {MAX_NODES} nodes once its aliases are expanded, \
                     the most a campaign file may have; it crossed the limit here"
                ),
            ));
        }
        Ok(())
    }

    fn open(
        &mut self,
        at: Pos,
        anchor: usize,
        tag: Option<&Tag>,
        body: Body,
    ) -> Result<(), ReadError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(too_deep(at));
        }
        self.count(1, at)?;
        let seg = match self.stack.last().map(|f| &f.body) {
            Some(Body::Seq(items)) => Some(Seg::Index(items.len())),
            Some(Body::Map { key: Some(k), .. }) => k.as_str().map(|k| Seg::Key(k.to_owned())),
            _ => None,
        };
        let core = matches!(&body, Body::Seq(_)) && is_core(tag, "seq")
            || matches!(&body, Body::Map { .. }) && is_core(tag, "map");
        self.stack.push(Frame {
            at,
            tag: tag.filter(|_| !core).map(tag_text),
            anchor,
            nodes_before: self.nodes - 1,
            height: 0,
            seg,
            body,
        });
        Ok(())
    }

    fn close(&mut self) {
        let Some(f) = self.stack.pop() else {
            return;
        };
        let kind = match f.body {
            Body::Seq(items) => Kind::Seq(items),
            Body::Map { entries, .. } => {
                let mut path: Vec<Seg> = self.stack.iter().filter_map(|f| f.seg.clone()).collect();
                path.extend(f.seg.clone());
                Kind::Map(self.merge(entries, &path_string(&path)))
            }
        };
        let height = f.height + 1;
        let node = Arc::new(Node {
            at: f.at,
            tag: f.tag,
            kind,
        });
        self.remember(f.anchor, &node, self.nodes - f.nodes_before, height);
        self.place(node, height);
    }

    fn remember(&mut self, anchor: usize, node: &Arc<Node>, size: u64, height: usize) {
        if anchor != 0 {
            let node = node.clone();
            self.anchors.insert(anchor, Anchored { node, size, height });
        }
    }

    fn place(&mut self, node: Arc<Node>, height: usize) {
        let Some(f) = self.stack.last_mut() else {
            self.root = Some(node);
            return;
        };
        f.height = f.height.max(height);
        match &mut f.body {
            Body::Seq(items) => items.push(node),
            Body::Map { entries, key } => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }

    /// Resolves the `<<` keys of a finished mapping: their mappings' entries
    /// come after the mapping's own, never replacing one, the first of a list
    /// of mappings winning. Duplicate keys are reported.
    fn merge(
        &mut self,
        entries: Vec<(Arc<Node>, Arc<Node>)>,
        path: &str,
    ) -> Vec<(Arc<Node>, Arc<Node>)> {
        let mut seen = HashSet::new();
        let mut own = Vec::with_capacity(entries.len());
        let mut merges = Vec::new();
        for (k, v) in entries {
            let id = key_id(&k);
            if let Some(id) = &id {
                if !seen.insert(id.clone()) {
                    self.errors.push(ReadError {
                        path: path.to_owned(),
                        message: format!("duplicate entry with key {}", super::quoted(&id.1)),
                        at: Some(k.at),
                    });
                    continue;
                }
            }
            let is_merge = k
                .scalar()
                .is_some_and(|s| s.style == ScalarStyle::Plain && s.text == "<<");
            if is_merge {
                merges.push(v);
            } else {
                own.push((k, v));
            }
        }
        for m in merges {
            let sources: Vec<&Arc<Node>> = match (&m.kind, &m.tag) {
                (Kind::Map(_), None) => vec![&m],
                (Kind::Seq(items), None) if items.iter().all(|i| i.as_map().is_some()) => {
                    items.iter().collect()
                }
                _ => {
                    self.errors.push(ReadError {
                        path: path.to_owned(),
                        message: format!(
                            "a merge key `<<` takes a mapping or a list of mappings, found {}",
                            super::describe(&m)
                        ),
                        at: Some(m.at),
                    });
                    continue;
                }
            };
            for source in sources {
                for (k, v) in source.as_map().unwrap_or_default() {
                    if key_id(k).is_none_or(|id| seen.insert(id)) {
                        own.push((k.clone(), v.clone()));
                    }
                }
            }
        }
        own
    }
}

fn too_deep(at: Pos) -> ReadError {
    ReadError::at(
        at,
        format!(
            "the file nests lists and mappings more than {MAX_DEPTH} levels deep, aliases expanded"
        ),
    )
}

/// What makes two scalar keys the same key.
fn key_id(k: &Node) -> Option<(bool, String)> {
    let s = k.scalar()?;
    Some((s.value == Resolved::Str, s.text.clone()))
}

const CORE: &str = "tag:yaml.org,2002:";

fn is_core(tag: Option<&Tag>, name: &str) -> bool {
    tag.is_some_and(|t| t.handle == CORE && t.suffix == name)
}

fn tag_text(t: &Tag) -> String {
    if t.handle == CORE {
        format!("!!{}", t.suffix)
    } else {
        format!("{}{}", t.handle, t.suffix)
    }
}

/// The core schema, as serde_yaml_ng applies it: only plain scalars can be
/// anything but strings; `!!str` and friends force a type, and a scalar that
/// does not fit its core tag, or has another tag, keeps the tag.
fn resolve(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> (Resolved, Option<String>) {
    let Some(tag) = tag else {
        return match style {
            ScalarStyle::Plain => (plain(text), None),
            _ => (Resolved::Str, None),
        };
    };
    let value = plain(text);
    let fits = tag.handle == CORE
        && match tag.suffix.as_str() {
            "str" => return (Resolved::Str, None),
            "null" => value == Resolved::Null,
            "bool" => matches!(value, Resolved::Bool(_)),
            "int" => matches!(value, Resolved::Int(_)),
            "float" => matches!(value, Resolved::Int(_) | Resolved::Float(_)),
            _ => false,
        };
    if fits {
        (value, None)
    } else {
        (Resolved::Str, Some(tag_text(tag)))
    }
}

fn plain(s: &str) -> Resolved {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        _ => {}
    }
    if let Some(i) = int(s) {
        return Resolved::Int(i);
    }
    if leading_zero_digits(s) {
        return Resolved::Str;
    }
    float(s).map_or(Resolved::Str, Resolved::Float)
}

fn int(s: &str) -> Option<i128> {
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = [("0x", 16), ("0o", 8), ("0b", 2)]
        .iter()
        .find_map(|(p, r)| unsigned.strip_prefix(p).map(|d| (*r, d)))
        .unwrap_or((10, unsigned));
    if digits.is_empty()
        || digits.starts_with(['+', '-'])
        || (radix == 10 && leading_zero_digits(unsigned))
    {
        return None;
    }
    let n = i128::from_str_radix(digits, radix).ok()?;
    Some(if negative { -n } else { n })
}

/// `007` is a string in YAML 1.2, not a number.
fn leading_zero_digits(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    s.len() > 1 && s.starts_with('0') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

fn float(s: &str) -> Option<f64> {
    let unsigned = s.strip_prefix('+').unwrap_or(s);
    if unsigned.starts_with(['+', '-']) && s.starts_with('+') {
        return None;
    }
    match unsigned {
        ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    // Rust also reads "inf" and "nan", which YAML does not.
    unsigned.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Byte offsets of the parser's character offsets, which arrive nearly in
/// order, so the walk between two of them is short.
struct Cursor<'t> {
    text: &'t str,
    ascii: bool,
    chars: usize,
    bytes: usize,
}

impl<'t> Cursor<'t> {
    fn new(text: &'t str) -> Self {
        Cursor {
            text,
            ascii: text.is_ascii(),
            chars: 0,
            bytes: 0,
        }
    }

    fn byte(&mut self, chars: usize) -> usize {
        if self.ascii {
            return chars.min(self.text.len());
        }
        while self.chars < chars && self.bytes < self.text.len() {
            let c = self.text[self.bytes..].chars().next().unwrap_or_default();
            self.bytes += c.len_utf8();
            self.chars += 1;
        }
        while self.chars > chars {
            let c = self.text[..self.bytes]
                .chars()
                .next_back()
                .unwrap_or_default();
            self.bytes -= c.len_utf8();
            self.chars -= 1;
        }
        self.bytes
    }
}
