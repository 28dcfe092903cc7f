//! A strict JSON pull reader for the review fast path: walks a body once,
//! hands out the strings asked for (borrowed unless they hold escapes) and
//! checks everything it passes over without building it.
//!
//! It accepts only what serde_json accepts (RFC 8259: no comments, no
//! trailing commas, no leading zeros, no control characters in strings),
//! and gives up ([`GaveUp`]) on anything else, and on a few valid but
//! unusual inputs (nesting deeper than [`MAX_DEPTH`], a lone surrogate
//! escape): the caller then reads the body with serde_json, which accepts
//! or refuses it and says why. So this reader never has to explain an
//! error and never widens what counts as JSON. It does not know any wire
//! type; `admission` and `workload` say what to read.

use std::borrow::Cow;

/// Nesting (objects and arrays) beyond which the reader gives up: well
/// under serde_json's limit of 128, so a body serde_json refuses as too
/// deep is never accepted here. Real objects nest about 10 deep.
pub const MAX_DEPTH: usize = 100;

/// Containers one skipped value may open inside one another: a bit each
/// in a `u64` (one register); deeper, the reader gives up (and serde_json
/// reads the body).
const SKIP_DEPTH: usize = 64;

/// The reader will not (or cannot) go on: read the body with serde_json.
#[derive(Debug, PartialEq, Eq)]
pub struct GaveUp;

pub type Read<T> = Result<T, GaveUp>;

/// A position in a UTF-8 body (the caller checked it is UTF-8).
pub struct Reader<'a> {
    text: &'a str,
    at: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Self {
        Reader {
            text,
            at: 0,
            depth: 0,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte that is not whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        let b = self.bytes();
        while let Some(&c) = b.get(self.at) {
            // Every byte JSON may put here but whitespace is above b' '
            // (and the apiserver's JSON has no whitespace): one compare.
            if c > b' ' || !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(c);
            }
            self.at += 1;
        }
        None
    }

    fn eat(&mut self, c: u8) -> Read<()> {
        if self.peek() == Some(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(GaveUp)
        }
    }

    fn literal(&mut self, word: &[u8]) -> Read<()> {
        if self.bytes()[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(GaveUp)
        }
    }

    /// Nothing but whitespace is left.
    pub fn end(mut self) -> Read<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(GaveUp),
        }
    }

    /// Consumes a `null` if that is what comes next.
    pub fn null(&mut self) -> Read<bool> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    pub fn bool(&mut self) -> Read<bool> {
        match self.peek() {
            Some(b't') => self.literal(b"true").map(|()| true),
            Some(b'f') => self.literal(b"false").map(|()| false),
            _ => Err(GaveUp),
        }
    }

    fn enter(&mut self) -> Read<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(GaveUp);
        }
        Ok(())
    }

    /// An object: `field` is called with each key (escapes decoded) and
    /// must read or skip the value.
    pub fn object(&mut self, mut field: impl FnMut(&mut Self, &str) -> Read<()>) -> Read<()> {
        self.eat(b'{')?;
        self.enter()?;
        if self.peek() == Some(b'}') {
            self.at += 1;
        } else {
            loop {
                if self.peek() != Some(b'"') {
                    return Err(GaveUp);
                }
                self.at += 1;
                let key = self.string_rest()?;
                self.eat(b':')?;
                field(self, &key)?;
                match self.peek() {
                    Some(b',') => self.at += 1,
                    Some(b'}') => {
                        self.at += 1;
                        break;
                    }
                    _ => return Err(GaveUp),
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// An array: `item` is called for each element and must read or skip it.
    pub fn array(&mut self, mut item: impl FnMut(&mut Self) -> Read<()>) -> Read<()> {
        self.eat(b'[')?;
        self.enter()?;
        if self.peek() == Some(b']') {
            self.at += 1;
        } else {
            loop {
                item(self)?;
                match self.peek() {
                    Some(b',') => self.at += 1,
                    Some(b']') => {
                        self.at += 1;
                        break;
                    }
                    _ => return Err(GaveUp),
                }
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// A string, borrowed from the body unless it holds escapes.
    #[inline]
    pub fn string(&mut self) -> Read<Cow<'a, str>> {
        self.eat(b'"')?;
        self.string_rest()
    }

    /// The rest of a string whose opening quote was consumed.
    #[inline]
    fn string_rest(&mut self) -> Read<Cow<'a, str>> {
        let start = self.at;
        let (end, escaped) = self.scan_string()?;
        let raw = self.text.get(start..end).ok_or(GaveUp)?;
        if escaped {
            unescape(raw).map(Cow::Owned)
        } else {
            Ok(Cow::Borrowed(raw))
        }
    }

    /// A string or `null`.
    pub fn optional_string(&mut self) -> Read<Option<String>> {
        if self.null()? {
            return Ok(None);
        }
        self.string().map(|s| Some(s.into_owned()))
    }

    /// A string or `null`, borrowed from `known` when it is one of those
    /// (the apiserver's versions, kinds and operations: no allocation).
    pub fn known_string(&mut self, known: &[&'static str]) -> Read<Option<Cow<'static, str>>> {
        if self.null()? {
            return Ok(None);
        }
        let s = self.string()?;
        Ok(Some(match known.iter().find(|k| **k == s) {
            Some(k) => Cow::Borrowed(k),
            None => Cow::Owned(s.into_owned()),
        }))
    }

    /// Passes the rest of a string whose opening quote was consumed,
    /// checking it: the position of the closing quote (consumed), and
    /// whether there were escapes. Inlined: it runs for every string, and
    /// a call's register saves cost about a fifth of a short one.
    #[inline(always)]
    fn scan_string(&mut self) -> Read<(usize, bool)> {
        let b = self.bytes();
        let mut i = self.at;
        let mut escaped = false;
        // Where the last whole word of the body starts (none in a body
        // shorter than eight bytes): `i <= last` proves `i + 8 <= len`, so
        // the loop below needs no other bounds test.
        let last = b.len().checked_sub(8);
        loop {
            // Eight bytes at a time to the first byte that may end or
            // interrupt the plain run (see `first_special`). The last few
            // bytes of the body go one at a time.
            while last.is_some_and(|last| i <= last) {
                let Some(chunk) = b[i..].first_chunk::<8>() else {
                    break;
                };
                if let Some(at) = first_special(chunk) {
                    i += at;
                    break;
                }
                i += 8;
            }
            match b.get(i) {
                None => return Err(GaveUp),
                Some(b'"') => {
                    self.at = i + 1;
                    return Ok((i, escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    match b.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u') => {
                            hex4(b.get(i + 2..i + 6).ok_or(GaveUp)?)?;
                            i += 6;
                        }
                        _ => return Err(GaveUp),
                    }
                }
                Some(&c) if c < 0x20 => return Err(GaveUp),
                Some(_) => i += 1,
            }
        }
    }

    /// A number, checked against the JSON grammar, not converted.
    fn number(&mut self) -> Read<()> {
        let b = self.bytes();
        let mut i = self.at;
        let digits = |i: &mut usize| {
            let from = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i > from
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                digits(&mut i);
            }
            _ => return Err(GaveUp),
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if !digits(&mut i) {
                return Err(GaveUp);
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !digits(&mut i) {
                return Err(GaveUp);
            }
        }
        self.at = i;
        Ok(())
    }

    /// Passes one value of any kind, checking it, building nothing. Loops
    /// rather than recursing: a bit per open container says object or
    /// array (at most [`SKIP_DEPTH`] of them, within [`MAX_DEPTH`] in all).
    pub fn skip(&mut self) -> Read<()> {
        let mut objects: u64 = 0;
        let mut open = 0usize;
        'value: loop {
            match self.peek().ok_or(GaveUp)? {
                c @ (b'{' | b'[') => {
                    self.at += 1;
                    open += 1;
                    if self.depth + open > MAX_DEPTH || open > SKIP_DEPTH {
                        return Err(GaveUp);
                    }
                    let object = c == b'{';
                    objects = objects << 1 | u64::from(object);
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                        open -= 1;
                        objects >>= 1;
                    } else {
                        if object {
                            self.key()?;
                        }
                        continue 'value;
                    }
                }
                b'"' => {
                    self.at += 1;
                    self.scan_string()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return Err(GaveUp),
            }
            // A value ended: close what it ended, or go on to the next.
            while open > 0 {
                let object = objects & 1 == 1;
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if object {
                            self.key()?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if object => {}
                    Some(b']') if !object => {}
                    _ => return Err(GaveUp),
                }
                self.at += 1;
                open -= 1;
                objects >>= 1;
            }
            return Ok(());
        }
    }

    /// A key and its colon, passed over. Inlined into `skip`, its only
    /// caller, for the same reason as the scan.
    #[inline(always)]
    fn key(&mut self) -> Read<()> {
        self.eat(b'"')?;
        self.scan_string()?;
        // The colon right after the key, as the apiserver writes it,
        // without a call; with whitespace before it, by `eat`.
        if self.bytes().get(self.at) == Some(&b':') {
            self.at += 1;
            return Ok(());
        }
        self.eat(b':')
    }
}

/// A value or `null` (`None`), as serde reads an `Option`.
pub fn optional<'a, T>(
    r: &mut Reader<'a>,
    read: impl FnOnce(&mut Reader<'a>) -> Read<T>,
) -> Read<Option<T>> {
    if r.null()? {
        Ok(None)
    } else {
        read(r).map(Some)
    }
}

/// A value, `null` read as the default.
pub fn or_default<'a, T: Default>(
    r: &mut Reader<'a>,
    read: impl FnOnce(&mut Reader<'a>) -> Read<T>,
) -> Read<T> {
    Ok(optional(r, read)?.unwrap_or_default())
}

/// The fields of one object already read: a field twice gives up, as a
/// serde-derived struct refuses a duplicate field.
#[derive(Default)]
pub struct Seen(u32);

impl Seen {
    /// Marks field number `n` (below 32) as read.
    pub fn first(&mut self, n: u32) -> Read<()> {
        let bit = 1 << n;
        if self.0 & bit != 0 {
            return Err(GaveUp);
        }
        self.0 |= bit;
        Ok(())
    }
}

/// Where the first byte below 0x23 or backslash is in `chunk`, if
/// anywhere: every quote, backslash and control character (what ends or
/// interrupts a string's plain run) is one, and so are space and `!`,
/// which the caller passes over one at a time (the apiserver's strings
/// rarely hold them). One range test instead of a test for the quote
/// saves a fifth of the work per word. In plain integer arithmetic (no
/// SIMD without unsafe code): `x - n` per byte borrows where a byte is
/// below `n`, and `& !x & 0x80` keeps the borrows of bytes below 0x80;
/// bytes after the first flagged one may be flagged wrongly, the first is
/// exact. Little-endian: the first byte is the lowest. Eight bytes, not
/// sixteen: a `u128` costs two registers per step on x86_64, and most keys
/// and many values end within the first eight.
#[inline]
fn first_special(chunk: &[u8; 8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let w = u64::from_le_bytes(*chunk);
    let below = w.wrapping_sub(ONES * 0x23);
    let backslash = (w ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
    let special = (below | backslash) & !w & HIGH;
    (special != 0).then(|| (special.trailing_zeros() / 8) as usize)
}

fn hex4(digits: &[u8]) -> Read<u16> {
    let mut v = 0u16;
    for &d in digits {
        let n = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(GaveUp),
        };
        v = v << 4 | u16::from(n);
    }
    Ok(v)
}

/// The text of a string with escapes (already checked by `scan_string`).
/// A surrogate escape must be half of a pair: serde_json refuses a lone
/// one in a string it reads. Out of line: the strings that are read
/// rarely hold escapes, and inlined it made every string read save more
/// registers.
#[cold]
#[inline(never)]
fn unescape(raw: &str) -> Read<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let b = rest.as_bytes();
        let (c, used) = match b.get(at + 1).ok_or(GaveUp)? {
            b'"' => ('"', 2),
            b'\\' => ('\\', 2),
            b'/' => ('/', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'n' => ('\n', 2),
            b'r' => ('\r', 2),
            b't' => ('\t', 2),
            b'u' => {
                let hi = hex4(b.get(at + 2..at + 6).ok_or(GaveUp)?)?;
                match hi {
                    0xD800..=0xDBFF => {
                        if b.get(at + 6..at + 8) != Some(b"\\u") {
                            return Err(GaveUp);
                        }
                        let lo = hex4(b.get(at + 8..at + 12).ok_or(GaveUp)?)?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(GaveUp);
                        }
                        let code =
                            0x10000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00);
                        (char::from_u32(code).ok_or(GaveUp)?, 12)
                    }
                    0xDC00..=0xDFFF => return Err(GaveUp),
                    _ => (char::from_u32(u32::from(hi)).ok_or(GaveUp)?, 6),
                }
            }
            _ => return Err(GaveUp),
        };
        out.push(c);
        rest = &rest[at + used..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The first special byte of eight is found as a byte-by-byte look
    /// finds it, wherever it is, whatever follows it, and with every byte
    /// value around it (high bytes included).
    #[test]
    fn first_special_byte_in_eight() {
        let reference = |c: &[u8; 8]| c.iter().position(|&b| b == b'\\' || b < 0x23);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut found = 0;
        for round in 0..200_000 {
            let mut chunk = [0u8; 8];
            for b in &mut chunk {
                // Mostly plain bytes, so that a special one is often late.
                *b = match next() % 8 {
                    0 => (next() % 256) as u8,
                    _ => 0x20 + (next() % 0x60) as u8,
                };
            }
            if round % 3 == 0 {
                chunk[(next() % 8) as usize] = [
                    b'"', b'\\', 0, 0x1f, 0x20, b'!', 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xff,
                ][(next() % 12) as usize];
            }
            let want = reference(&chunk);
            found += usize::from(want.is_some());
            assert_eq!(first_special(&chunk), want, "{chunk:?}");
        }
        assert!(found > 50_000, "{found}");
        for b in 0..=255u8 {
            let mut chunk = [b'a'; 8];
            chunk[7] = b;
            let want = (b == b'\\' || b < 0x23).then_some(7);
            assert_eq!(first_special(&chunk), want, "{b}");
        }
    }

    /// Skips one whole document.
    fn skips(text: &str) -> bool {
        let mut r = Reader::new(text);
        r.skip().is_ok() && r.end().is_ok()
    }

    const DOCUMENTS: &[&str] = &[
        "0",
        "-0",
        "12",
        "-1.5e+10",
        "1E5",
        "0.25",
        "true",
        "false",
        "null",
        r#""""#,
        r#""a\"b\\c\/d\b\f\n\r\tü\u00e9\ud83d\ude00""#,
        "[]",
        "{}",
        " [ 1 , [ ] , { } ] ",
        r#"{"a":{"b":[1,{"c":null}]},"d":"e"}"#,
        "\t\r\n{\"k\" : \"v\" }\n",
        r#""\ud800""#, // a lone surrogate: serde_json skips it unread
        // Refused by both:
        "",
        " ",
        "01",
        "-",
        "1.",
        ".5",
        "1e",
        "1e+",
        "+1",
        "0x10",
        "NaN",
        "tru",
        "nul",
        "[1,]",
        "{\"a\":1,}",
        "[1 2]",
        "{\"a\" 1}",
        "{\"a\":}",
        "{1:2}",
        "{'a':1}",
        "\"abc",
        "\"a\u{1}b\"",
        "\"tab\there\"",
        r#""\x""#,
        r#""\u12""#,
        r#""\u12g4""#,
        "[1]]",
        "[}",
        "{]",
        "1 2",
        "// c\n1",
        "[1]x",
        "\"\\",
    ];

    #[test]
    fn skips_exactly_what_serde_json_accepts() {
        for doc in DOCUMENTS {
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(doc).is_ok();
            assert_eq!(skips(doc), serde, "{doc:?}");
        }
    }

    #[test]
    fn strings_decode_as_serde_json_decodes_them() {
        for doc in [
            r#""plain""#,
            r#""a\"b\\c\/d\b\f\n\r\t""#,
            r#""\u00e9\u20ac\ud83d\ude00x""#,
            r#""ünïcödé \u0041""#,
            r#""""#,
        ] {
            let mut r = Reader::new(doc);
            let ours = r.string().map(Cow::into_owned);
            let theirs: String = serde_json::from_str(doc).unwrap_or_default();
            assert_eq!(ours, Ok(theirs), "{doc}");
        }
        // Given up on (serde_json decides): lone or reversed surrogates.
        for doc in [
            r#""\ud800""#,
            r#""\ude00\ud83d""#,
            r#""\ud83dx""#,
            r#""\ud83d\u0041""#,
        ] {
            assert_eq!(Reader::new(doc).string(), Err(GaveUp), "{doc}");
        }
    }

    #[test]
    fn word_scan_finds_every_special_byte_at_every_offset() {
        for at in 0..40 {
            for special in ["\"", "\\n", "\u{1f}", "\u{0}", " ", "!", "#"] {
                let doc = format!(
                    "\"{}{special}{}\"",
                    "é".repeat(at / 2) + &"x".repeat(at % 2),
                    "y".repeat(9)
                );
                let serde = serde_json::from_str::<String>(&doc);
                let ours = Reader::new(&doc).string().map(Cow::into_owned);
                match serde {
                    // A quote ends the string early: the rest is trailing junk.
                    Ok(s) => assert_eq!(ours, Ok(s), "{doc:?}"),
                    Err(_) if special == "\"" => assert!(ours.is_ok()),
                    Err(_) => assert_eq!(ours, Err(GaveUp), "{doc:?}"),
                }
            }
        }
    }

    #[test]
    fn depth_is_capped_below_serde_json() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(skips(&nest(SKIP_DEPTH)));
        assert!(
            !skips(&nest(SKIP_DEPTH + 1)),
            "one skip nests 64 deep at most"
        );
        // Read containers and a skip inside them count together.
        let (full, over) = (nest(MAX_DEPTH), nest(MAX_DEPTH + 1));
        let mut r = Reader::new(&full);
        fn down(r: &mut Reader<'_>, left: usize) -> Read<()> {
            if left == 0 {
                r.skip()
            } else {
                r.array(|r| down(r, left - 1))
            }
        }
        assert_eq!(down(&mut r, MAX_DEPTH - SKIP_DEPTH), Ok(()));
        let mut r = Reader::new(&over);
        assert_eq!(down(&mut r, MAX_DEPTH + 1 - SKIP_DEPTH), Err(GaveUp));
        assert!(
            !skips(&nest(100_000)),
            "deep nesting is refused, not a crash"
        );
        let mut r = Reader::new(r#"{"a":[[1]]}"#);
        r.depth = MAX_DEPTH - 2;
        assert_eq!(
            r.skip(),
            Err(GaveUp),
            "the skip counts the depth it starts at"
        );
    }

    #[test]
    fn known_strings_are_borrowed_from_the_list() {
        let known = ["CREATE", "UPDATE"];
        let read = |doc: &str| Reader::new(doc).known_string(&known);
        assert!(matches!(
            read(r#""UPDATE""#),
            Ok(Some(Cow::Borrowed("UPDATE")))
        ));
        // Escapes decoded first: the same value, borrowed all the same.
        assert!(matches!(
            read(r#""\u0043REATE""#),
            Ok(Some(Cow::Borrowed("CREATE")))
        ));
        assert!(matches!(read(r#""DELETE""#), Ok(Some(Cow::Owned(s))) if s == "DELETE"));
        assert!(matches!(read(r#""update""#), Ok(Some(Cow::Owned(s))) if s == "update"));
        assert_eq!(read("null"), Ok(None));
        assert_eq!(read("1"), Err(GaveUp));
    }

    #[test]
    fn objects_and_arrays_hand_out_keys_and_items() {
        let doc = r#"{"name":"x","list":[1,"two",{"k":[]}],"n\u0061me2":null}"#;
        let mut r = Reader::new(doc);
        let mut seen = Vec::new();
        r.object(|r, key| {
            seen.push(key.to_string());
            match key {
                "name" => assert_eq!(r.string()?, "x"),
                "list" => r.array(|r| r.skip())?,
                _ => assert!(r.null()?),
            }
            Ok(())
        })
        .unwrap();
        r.end().unwrap();
        assert_eq!(seen, ["name", "list", "name2"]);
        let v: Value = serde_json::from_str(doc).unwrap();
        assert_eq!(v["name2"], Value::Null);
    }
}
