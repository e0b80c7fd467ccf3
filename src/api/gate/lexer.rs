//! The gate's lexer: GraphQL's lexical grammar as async-graphql's parser (pest) reads it, one pass
//! over the bytes. Only brackets, `...` and names matter to the gate; everything else is counted
//! as a token and skipped. Strings, block strings and comments are skipped exactly as the parser
//! skips them, since brackets inside them must not count and brackets outside them must.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Open(u8),
    Close(u8),
    Spread,
    Name,
    /// Punctuators other than brackets, numbers, strings and stray characters: they only count.
    Other,
    /// A `"""` with no closing `"""`: see `GateRefusal::UnclosedBlockString`.
    UnclosedBlockString,
}

pub(super) struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

/// Single pass over the bytes; every branch advances `pos`, so it ends on any input.
pub(super) struct Lexer<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(document: &'a str) -> Self {
        Lexer {
            bytes: document.as_bytes(),
            pos: 0,
        }
    }
}

const BOM: &[u8] = "\u{feff}".as_bytes();

/// How many bytes of ignored input (whitespace, comma, line break, BOM) start at `i`.
fn ignored_len(bytes: &[u8], i: usize) -> usize {
    match bytes[i] {
        b' ' | b',' | b'\t' | b'\r' | b'\n' => 1,
        _ if bytes[i..].starts_with(BOM) => BOM.len(),
        _ => 0,
    }
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The parser's type condition is `"on" ~ WHITESPACE+ ~ name` with no comment allowed in between.
pub(super) fn type_condition_follows(bytes: &[u8], mut i: usize) -> bool {
    let start = i;
    while i < bytes.len() {
        match ignored_len(bytes, i) {
            0 => break,
            n => i += n,
        }
    }
    i > start && i < bytes.len() && is_name_start(bytes[i])
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let b = self.bytes;
        // Skip whitespace, commas, BOMs and comments (a comment ends at CR or LF, as in the parser).
        while self.pos < b.len() {
            match ignored_len(b, self.pos) {
                0 if b[self.pos] == b'#' => {
                    while self.pos < b.len() && b[self.pos] != b'\n' && b[self.pos] != b'\r' {
                        self.pos += 1;
                    }
                }
                0 => break,
                n => self.pos += n,
            }
        }
        let start = self.pos;
        let &first = b.get(start)?;
        let mut i = start + 1;
        let kind = match first {
            b'{' | b'[' | b'(' => Kind::Open(first),
            b'}' | b']' | b')' => Kind::Close(first),
            b'.' if b[start..].starts_with(b"...") => {
                i = start + 3;
                Kind::Spread
            }
            b'"' if b[start..].starts_with(b"\"\"\"") => {
                i = start + 3;
                loop {
                    if i >= b.len() {
                        self.pos = b.len();
                        return Some(Token {
                            kind: Kind::UnclosedBlockString,
                            start,
                            end: i,
                        });
                    }
                    if b[i..].starts_with(b"\\\"\"\"") {
                        i += 4;
                    } else if b[i..].starts_with(b"\"\"\"") {
                        i += 3;
                        break;
                    } else {
                        i += 1;
                    }
                }
                Kind::Other
            }
            b'"' => {
                // Ends at the closing quote, or before a line break (a syntax error the parser
                // stops at; lexing on from there can only count more structure, never less).
                while i < b.len() && !matches!(b[i], b'"' | b'\n' | b'\r') {
                    i += if b[i] == b'\\' && i + 1 < b.len() && !matches!(b[i + 1], b'\n' | b'\r') {
                        2
                    } else {
                        1
                    };
                }
                if i < b.len() && b[i] == b'"' {
                    i += 1;
                }
                Kind::Other
            }
            _ if is_name_start(first) => {
                while i < b.len() && is_name_continue(b[i]) {
                    i += 1;
                }
                Kind::Name
            }
            b'-' | b'0'..=b'9' => {
                let digits = |mut i: usize| {
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    i
                };
                let digit_at = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
                i = digits(i);
                if b.get(i) == Some(&b'.') && digit_at(i + 1) {
                    i = digits(i + 1);
                }
                if matches!(b.get(i), Some(b'e' | b'E')) {
                    let sign = usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
                    if digit_at(i + 1 + sign) {
                        i = digits(i + 1 + sign);
                    }
                }
                Kind::Other
            }
            _ => {
                // Punctuators and stray characters: one token per character.
                while i < b.len() && b[i] & 0xC0 == 0x80 {
                    i += 1;
                }
                Kind::Other
            }
        };
        self.pos = i;
        Some(Token { kind, start, end: i })
    }
}
