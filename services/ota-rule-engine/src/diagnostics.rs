//! Problems found in an expression, positioned in its source so an editor or
//! CLI can point at them, and the lexical guards that run before parsing.

use std::fmt;

use ota_proto::v1 as pb;
use serde::{Deserialize, Serialize};

/// Longest accepted expression, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 16 * 1024;
/// Deepest accepted nesting of sub-expressions.
pub const MAX_NESTING: usize = 32;

/// One problem in one expression of a rule set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExpressionError {
    /// "target" or `rules[N].when`.
    pub path: String,
    pub message: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub column: u32,
    /// The offending line, then a line with `^` under the column.
    pub excerpt: String,
}

impl fmt::Display for ExpressionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path, self.line, self.column, self.message
        )
    }
}

impl From<ExpressionError> for pb::ExpressionError {
    fn from(e: ExpressionError) -> Self {
        pb::ExpressionError {
            path: e.path,
            message: e.message,
            position: Some(pb::SourcePosition {
                line: e.line,
                column: e.column,
            }),
            excerpt: e.excerpt,
        }
    }
}

impl From<pb::ExpressionError> for ExpressionError {
    fn from(e: pb::ExpressionError) -> Self {
        let position = e.position.unwrap_or_default();
        ExpressionError {
            path: e.path,
            message: e.message,
            line: position.line,
            column: position.column,
            excerpt: e.excerpt,
        }
    }
}

/// An expression's text and where it sits in the rule set, to build errors.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub path: &'a str,
    pub text: &'a str,
}

impl Source<'_> {
    pub fn error(&self, line: usize, column: usize, message: impl Into<String>) -> ExpressionError {
        let (line, column) = (line.max(1), column.max(1));
        ExpressionError {
            path: self.path.to_owned(),
            message: message.into(),
            line: line as u32,
            column: column as u32,
            excerpt: excerpt(self.text, line, column),
        }
    }

    /// An error at a character offset.
    pub fn error_at(&self, char_offset: usize, message: impl Into<String>) -> ExpressionError {
        let (line, column) = line_column(self.text, char_offset);
        self.error(line, column, message)
    }

    /// The character offset of a byte offset, as the parser records node
    /// positions in bytes while its syntax errors count characters.
    pub fn char_offset(&self, byte: usize) -> usize {
        let mut byte = byte.min(self.text.len());
        while !self.text.is_char_boundary(byte) {
            byte -= 1;
        }
        self.text[..byte].chars().count()
    }

    /// The character offset of the occurrence of `word` nearest to `near`:
    /// the parser positions a select at its dot and a call at its
    /// parenthesis, while an error reads best under the name itself.
    pub fn locate(&self, near: usize, word: &str) -> usize {
        let chars: Vec<char> = self.text.chars().collect();
        let word: Vec<char> = word.chars().collect();
        if word.is_empty() || word.len() > chars.len() {
            return near;
        }
        (0..=chars.len() - word.len())
            .filter(|&i| chars[i..i + word.len()] == word[..])
            .min_by_key(|&i| i.abs_diff(near))
            .unwrap_or(near)
    }
}

/// 1-based line and column of a character offset.
pub(crate) fn line_column(text: &str, char_offset: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    for c in text.chars().take(char_offset) {
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// The source line and a caret under `column`; a long line is cut to a
/// window around the column so that the caret stays readable.
pub(crate) fn excerpt(text: &str, line: usize, column: usize) -> String {
    const WIDTH: usize = 100;
    let src: Vec<char> = text
        .split('\n')
        .nth(line - 1)
        .unwrap_or("")
        .trim_end_matches('\r')
        .chars()
        .collect();
    let caret = column - 1;
    let (mut start, mut end) = (0, src.len());
    if src.len() > WIDTH {
        start = caret
            .saturating_sub(WIDTH / 2)
            .min(src.len().saturating_sub(WIDTH));
        end = (start + WIDTH).min(src.len());
    }
    let mut shown = String::new();
    let mut pad = String::new();
    if start > 0 {
        shown.push('…');
        pad.push(' ');
    }
    shown.extend(&src[start..end]);
    if end < src.len() {
        shown.push('…');
    }
    // A tab stays a tab under itself so the caret lines up in any terminal.
    for i in start..caret {
        pad.push(if src.get(i) == Some(&'\t') { '\t' } else { ' ' });
    }
    format!("{shown}\n{pad}^")
}

/// Rewrites an ANTLR message for people: no list of 17 expected tokens.
pub(crate) fn syntax_message(raw: &str) -> String {
    let msg = raw.strip_prefix("Syntax error: ").unwrap_or(raw);
    let quoted = |s: &str| -> String {
        match s.trim_matches('\'') {
            "<EOF>" => "end of expression".to_owned(),
            t => format!("`{t}`"),
        }
    };
    let body = if let Some(rest) = msg.strip_prefix("mismatched input ") {
        let input = rest.split(" expecting").next().unwrap_or(rest);
        format!("unexpected {}", quoted(input))
    } else if let Some(rest) = msg.strip_prefix("extraneous input ") {
        let input = rest.split(" expecting").next().unwrap_or(rest);
        format!("unexpected {}", quoted(input))
    } else if let Some(rest) = msg.strip_prefix("no viable alternative at input ") {
        format!("cannot parse {}", quoted(rest))
    } else if let Some(rest) = msg.strip_prefix("missing ") {
        match rest.split_once(" at ") {
            Some((what, at)) => format!("missing {} before {}", quoted(what), quoted(at)),
            None => format!("missing {rest}"),
        }
    } else if let Some(rest) = msg.strip_prefix("token recognition error at: ") {
        format!("unexpected character {}", quoted(rest))
    } else {
        let mut chars = msg.chars();
        match chars.next() {
            Some(c) => c.to_lowercase().chain(chars).collect(),
            None => "invalid expression".to_owned(),
        }
    };
    format!("syntax error: {body}")
}

/// Where, if anywhere, the text nests too deeply to be handed to the parser,
/// whose recursion follows the nesting and could overflow the stack on a
/// hostile 16 KiB input such as `a.b.b.b…` or `1+1+1…`.
///
/// The estimate counts, per bracket level, the operators chained since the
/// last `&&`, `||` or `,` (which the parser balances or separates), so it is
/// at least the real depth minus a logarithm; it is compared with a limit
/// well above [`MAX_NESTING`], which the AST is checked against exactly.
pub(crate) fn lexical_nesting_overflow(text: &str, limit: usize) -> Option<usize> {
    let chars: Vec<char> = text.chars().collect();
    let mut levels: Vec<usize> = vec![0];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '"' | '\'' => {
                let raw = i > 0 && matches!(chars[i - 1], 'r' | 'R');
                i = skip_string(&chars, i, raw);
                continue;
            }
            '(' | '[' | '{' => {
                *levels.last_mut().expect("never empty") += 1;
                levels.push(0);
            }
            ')' | ']' | '}' if levels.len() > 1 => {
                levels.pop();
            }
            '&' | '|' if next == Some(c) => {
                *levels.last_mut().expect("never empty") = 0;
                i += 2;
                continue;
            }
            ',' => *levels.last_mut().expect("never empty") = 0,
            '.' if next.is_some_and(|n| n.is_ascii_digit())
                && i > 0
                && chars[i - 1].is_ascii_digit() => {}
            '.' | '=' | '!' | '<' | '>' | '+' | '-' | '*' | '/' | '%' | '?' | ':' => {
                *levels.last_mut().expect("never empty") += 1;
                // two-character operators count once
                if next == Some('=') && matches!(c, '=' | '!' | '<' | '>') {
                    i += 1;
                }
            }
            c if c.is_alphanumeric() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                if chars[start..i] == ['i', 'n'] {
                    *levels.last_mut().expect("never empty") += 1;
                }
                continue;
            }
            _ => {}
        }
        let depth: usize = levels.iter().map(|chain| chain + 1).sum();
        if depth > limit {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The index just past the string literal opening at `start`.
fn skip_string(chars: &[char], start: usize, raw: bool) -> usize {
    let quote = chars[start];
    let triple = chars.get(start + 1) == Some(&quote) && chars.get(start + 2) == Some(&quote);
    let mut i = start + if triple { 3 } else { 1 };
    while i < chars.len() {
        if chars[i] == '\\' && !raw {
            i += 2;
            continue;
        }
        if chars[i] == quote {
            if !triple {
                return i + 1;
            }
            if chars.get(i + 1) == Some(&quote) && chars.get(i + 2) == Some(&quote) {
                return i + 3;
            }
        }
        i += 1;
    }
    chars.len()
}

/// The candidate closest to `name`, if close enough to be a likely typo.
pub(crate) fn suggest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let max = if name.chars().count() >= 4 { 2 } else { 1 };
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|&(d, _)| d <= max)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: Levenshtein plus adjacent swaps, so
/// that `modle` is one edit from `model`.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_puts_a_caret_under_the_column() {
        assert_eq!(excerpt("a &&\n  b ==", 2, 6), "  b ==\n     ^");
        assert_eq!(excerpt("\tx", 1, 2), "\tx\n\t^");
        // past the end, as for "unexpected end of expression"
        assert_eq!(excerpt("a ==", 1, 5), "a ==\n    ^");
    }

    #[test]
    fn long_lines_are_windowed_around_the_caret() {
        let line = format!("{}X{}", "a".repeat(300), "b".repeat(300));
        let e = excerpt(&line, 1, 301);
        let (shown, caret) = e.split_once('\n').unwrap();
        assert!(shown.starts_with('…') && shown.ends_with('…'), "{shown}");
        assert_eq!(shown.chars().nth(caret.chars().count() - 1), Some('X'));
    }

    #[test]
    fn positions_count_characters_and_lines() {
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("'ü' == x", 4), (1, 5));
        let src = Source {
            path: "target",
            text: "vehicle.modle == 1",
        };
        assert_eq!(src.locate(7, "modle"), 8);
    }

    #[test]
    fn syntax_messages_are_short() {
        assert_eq!(
            syntax_message("Syntax error: mismatched input '<EOF>' expecting {'[', '{'}"),
            "syntax error: unexpected end of expression"
        );
        assert_eq!(
            syntax_message("Syntax error: missing ')' at '<EOF>'"),
            "syntax error: missing `)` before end of expression"
        );
        assert_eq!(
            syntax_message("Syntax error: no viable alternative at input '.)'"),
            "syntax error: cannot parse `.)`"
        );
    }

    #[test]
    fn lexical_nesting_bounds_chains_but_not_flat_conjunctions() {
        assert!(lexical_nesting_overflow(&format!("a{}", ".b".repeat(200)), 96).is_some());
        assert!(lexical_nesting_overflow(&format!("1{}", "+1".repeat(200)), 96).is_some());
        assert!(lexical_nesting_overflow(&format!("{}1", "!".repeat(200)), 96).is_some());
        assert!(
            lexical_nesting_overflow(&format!("{}1{}", "(".repeat(200), ")".repeat(200)), 96)
                .is_some()
        );
        let flat = vec!["vehicle.model == 'a.b.c.d.e.f'"; 300].join(" || ");
        assert_eq!(lexical_nesting_overflow(&flat, 96), None);
        let list = format!("vehicle.model in [{}]", vec!["'x'"; 1000].join(", "));
        assert_eq!(lexical_nesting_overflow(&list, 96), None);
        assert_eq!(lexical_nesting_overflow("1.5 < 2.5", 3), None);
    }

    #[test]
    fn suggestions_catch_typos_only() {
        let fields = ["vin", "model", "model_year", "platform"];
        assert_eq!(suggest("modle", fields), Some("model"));
        assert_eq!(suggest("platfrom", fields), Some("platform"));
        assert_eq!(suggest("colour", fields), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
