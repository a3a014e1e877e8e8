//! Where a character of a scalar's value was written in the file, so that a
//! CEL error's line and column within an expression become a line and column
//! within the campaign file.
//!
//! The value is aligned with the scalar's source text, following the rules of
//! its style:
//! - single-line plain, single-quoted and double-quoted scalars map exactly,
//!   character by character (`''` and `\` escapes included: an escaped
//!   character maps to its backslash);
//! - literal (`|`) and folded (`>`) block scalars map exactly once their
//!   indentation is stripped; in a folded one a space made from a line break
//!   maps to that line break;
//! - in a multi-line plain or quoted scalar every character that is not white
//!   space maps exactly, and white space made by line folding maps to the
//!   white space it came from.
//!
//! When the alignment fails (a case the rules above do not cover), the
//! scalar's own position is used.

use saphyr_parser::ScalarStyle;

use super::yaml::{Node, Pos};

/// An expression's value and the source text around it, kept apart from
/// the tree so that it can cross the awaits of validation.
#[derive(Debug, Clone)]
pub(crate) struct ScalarSource {
    /// Where the scalar starts (its properties included).
    at: Pos,
    value: String,
    style: ScalarStyle,
    /// The scalar's text in the file; for a block scalar, from the start of
    /// its header's line.
    src: String,
    /// Where `src` starts.
    first: Pos,
    /// Characters of `src` before the scalar.
    lead: usize,
}

impl ScalarSource {
    pub fn capture(text: &str, node: &Node) -> Option<Self> {
        let s = node.scalar()?;
        let (start, end) = s.bytes;
        let (mut from, mut first) = (start, node.at);
        // A block scalar without properties starts at its first non-blank
        // line; its header is on the nearest non-blank line above. Only
        // those lines are walked, so capturing every expression of a file
        // reads each line of it at most once.
        if matches!(s.style, ScalarStyle::Literal | ScalarStyle::Folded) {
            from = line_start(text, start);
            first.column = 1;
            while from > 0 {
                let above = line_start(text, from - 1);
                first.line = first.line.saturating_sub(1);
                let blank = text[above..from].trim().is_empty();
                from = above;
                if !blank {
                    break;
                }
            }
        }
        Some(ScalarSource {
            at: node.at,
            value: s.text.clone(),
            style: s.style,
            lead: text.get(from..start)?.chars().count(),
            src: text.get(from..end)?.to_owned(),
            first,
        })
    }

    /// The file position of line `line`, column `column` (1-based, in
    /// characters) of the value.
    pub fn locate(&self, line: u32, column: u32) -> Pos {
        let Some(offset) = offset_of(&self.value, line, column) else {
            return self.at;
        };
        let Some((map, end)) = self.align() else {
            return self.at;
        };
        match map.get(offset) {
            Some(p) => *p,
            // The end of a value that ends with a line break (a block
            // scalar's) reads best at that break, not on the next line.
            None if self.value.ends_with('\n') => map.last().copied().unwrap_or(end),
            None => end,
        }
    }

    /// Per character of the value, where it was written; then the position
    /// just past the last one.
    fn align(&self) -> Option<(Vec<Pos>, Pos)> {
        let src = Src::new(&self.src, self.first);
        match self.style {
            ScalarStyle::Literal | ScalarStyle::Folded => {
                // The header is where the scalar starts when it starts with
                // properties or its indicator, else on the line above.
                let i = skip_properties(&src, self.lead);
                let indicator = src.chars.get(i).filter(|c| matches!(c.0, '|' | '>'));
                let mut headers = Vec::with_capacity(2);
                if i > self.lead || indicator.is_some() {
                    headers.extend(src.chars.get(i).map(|c| c.1.line));
                }
                headers.push(self.first.line);
                headers
                    .into_iter()
                    .find_map(|h| align_block(&self.value, &src, h))
            }
            style => align_flow(
                &self.value,
                &src.chars[skip_properties(&src, self.lead)..],
                style,
            ),
        }
    }
}

/// The source as characters with their positions.
struct Src {
    chars: Vec<(char, Pos)>,
}

impl Src {
    fn new(text: &str, first: Pos) -> Self {
        let mut at = first;
        let chars = text
            .chars()
            .map(|c| {
                let here = at;
                if c == '\n' {
                    (at.line, at.column) = (at.line + 1, 1);
                } else {
                    at.column += 1;
                }
                (c, here)
            })
            .collect();
        Src { chars }
    }
}

/// Skips a node's anchor and tag: tokens starting with `&` or `!`.
fn skip_properties(src: &Src, mut i: usize) -> usize {
    let c = &src.chars;
    while i < c.len() && matches!(c[i].0, '&' | '!') {
        while i < c.len() && !c[i].0.is_whitespace() {
            i += 1;
        }
        while i < c.len() && c[i].0.is_whitespace() {
            i += 1;
        }
    }
    i
}

fn line_start(text: &str, byte: usize) -> usize {
    text[..byte].rfind('\n').map_or(0, |i| i + 1)
}

/// The character offset of a 1-based line and column of `value`; the end
/// of the value is a valid answer.
fn offset_of(value: &str, line: u32, column: u32) -> Option<usize> {
    let (mut l, mut c) = (1, 1);
    for (i, ch) in value.chars().enumerate() {
        if (l, c) == (line, column) {
            return Some(i);
        }
        if ch == '\n' {
            if l == line {
                return Some(i);
            }
            (l, c) = (l + 1, 1);
        } else {
            c += 1;
        }
    }
    (l == line && c <= column).then(|| value.chars().count())
}

fn is_break(c: char) -> bool {
    c == '\n' || c == '\r'
}

/// Plain and quoted scalars: the value's characters appear in order; what
/// is skipped is white space (indentation, folded line breaks), the quotes,
/// the second quote of `''` and the rest of a `\` escape.
fn align_flow(value: &str, src: &[(char, Pos)], style: ScalarStyle) -> Option<(Vec<Pos>, Pos)> {
    let quote = match style {
        ScalarStyle::SingleQuoted => Some('\''),
        ScalarStyle::DoubleQuoted => Some('"'),
        _ => None,
    };
    let mut j = usize::from(quote.is_some());
    if quote.is_some() && src.first().map(|c| c.0) != quote {
        return None;
    }
    let mut map = Vec::with_capacity(value.len());
    let mut last = src.get(j).or(src.last())?.1;
    for v in value.chars() {
        loop {
            let &(s, at) = src.get(j)?;
            if quote == Some('"') && s == '\\' {
                let next = src.get(j + 1).map_or(' ', |c| c.0);
                if is_break(next) {
                    // An escaped line break joins the lines: it and the
                    // next line's indentation make nothing.
                    j += 2;
                    while src
                        .get(j)
                        .is_some_and(|c| c.0 == ' ' || c.0 == '\t' || is_break(c.0))
                    {
                        j += 1;
                    }
                    continue;
                }
                map.push(at);
                j += match next {
                    'x' => 4,
                    'u' => 6,
                    'U' => 10,
                    _ => 2,
                };
                break;
            }
            if quote == Some('\'') && s == '\'' && v == '\'' {
                if src.get(j + 1).map(|c| c.0) != Some('\'') {
                    return None;
                }
                map.push(at);
                j += 2;
                break;
            }
            if Some(s) == quote {
                // The closing quote with value left: a folded break made it.
                if v == ' ' || v == '\n' {
                    map.push(last);
                    break;
                }
                return None;
            }
            if s == v {
                map.push(at);
                j += 1;
                break;
            }
            if s.is_whitespace() {
                j += 1;
                continue;
            }
            if v == ' ' || v == '\n' {
                map.push(last);
                break;
            }
            return None;
        }
        last = *map.last().unwrap_or(&last);
    }
    Some((map, next_column(last)))
}

fn next_column(p: Pos) -> Pos {
    Pos {
        line: p.line,
        column: p.column + 1,
    }
}

/// Block scalars: the content lines after the header, each without the
/// block's indentation, hold the value's characters in order; line breaks
/// are kept, folded into spaces or dropped.
fn align_block(value: &str, src: &Src, header_line: u32) -> Option<(Vec<Pos>, Pos)> {
    let lines = split_lines(&src.chars);
    let first = lines
        .iter()
        .position(|l| l.first().is_some_and(|c| c.1.line > header_line))?;
    let content = &lines[first..];
    let header = lines
        .iter()
        .find(|l| l.first().is_some_and(|c| c.1.line == header_line))?;
    if !header.iter().any(|c| matches!(c.0, '|' | '>')) {
        return None;
    }
    // The indentation: the first non-blank line's leading spaces less those
    // that are part of the value.
    let leading = |l: &[(char, Pos)]| l.iter().take_while(|c| c.0 == ' ').count();
    let first_text = content
        .iter()
        .find(|l| l.iter().any(|c| !c.0.is_whitespace()))?;
    let value_first = value.trim_start_matches('\n');
    let in_value = value_first.chars().take_while(|c| *c == ' ').count();
    let indent = leading(first_text).checked_sub(in_value)?;
    let mut joined: Vec<(char, Pos)> = Vec::new();
    for l in content {
        let body = &l[leading(l).min(indent)..];
        joined.extend(body.iter().copied());
    }
    let mut map = Vec::with_capacity(value.len());
    let mut j = 0;
    let mut last = joined.first()?.1;
    for v in value.chars() {
        loop {
            match joined.get(j) {
                Some(&(s, at)) if s == v => {
                    map.push(at);
                    j += 1;
                    break;
                }
                Some(&(s, at)) if is_break(s) && v == ' ' => {
                    map.push(at);
                    j += 1;
                    break;
                }
                Some(&(s, _)) if is_break(s) => j += 1,
                Some(_) => return None,
                // Kept trailing line breaks past the last content line.
                None if v == '\n' => {
                    map.push(last);
                    break;
                }
                None => return None,
            }
        }
        last = *map.last().unwrap_or(&last);
    }
    Some((map, next_column(last)))
}

/// Lines of the source, each with its line break.
fn split_lines(chars: &[(char, Pos)]) -> Vec<&[(char, Pos)]> {
    let mut out = Vec::new();
    let mut from = 0;
    for (i, c) in chars.iter().enumerate() {
        if c.0 == '\n' {
            out.push(&chars[from..=i]);
            from = i + 1;
        }
    }
    if from < chars.len() {
        out.push(&chars[from..]);
    }
    out
}
