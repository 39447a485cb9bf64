//! Path and header parameters parsed by kvq's own parsers and declared in the spec with the same
//! constraints, so `/openapi.json` says exactly what the server accepts and the 400s keep naming
//! the field with kvq's own words.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromParameter, ParseResult, Type};

use crate::domain::{Key, MAX_KEY_BYTES};

/// What a key may hold: no control characters (Unicode category Cc, as `char::is_control`).
pub const KEY_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]+$";
/// A version as an entity tag: `"42"`, weak `W/"42"` or bare `42`.
pub const IF_MATCH_PATTERN: &str = r#"^(W/)?"[0-9]{1,19}"$|^[0-9]{1,19}$"#;
/// Printable ASCII without spaces.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";
/// Lowercase hex of UTF-8, the only cursors `next_cursor` hands out (empty: the first page).
pub const CURSOR_PATTERN: &str = "^(?:[0-7][0-9a-f]|(?:c[2-9a-f]|d[0-9a-f])[89ab][0-9a-f]\
    |e0[ab][0-9a-f][89ab][0-9a-f]|e[1-9a-cef][89ab][0-9a-f][89ab][0-9a-f]|ed[89][0-9a-f][89ab][0-9a-f]\
    |f0[9ab][0-9a-f][89ab][0-9a-f][89ab][0-9a-f]|f[1-3][89ab][0-9a-f][89ab][0-9a-f][89ab][0-9a-f]\
    |f48[0-9a-f][89ab][0-9a-f][89ab][0-9a-f])*$";
/// Longest cursor: two hex digits per byte of the longest key.
pub const MAX_CURSOR_CHARS: usize = 2 * MAX_KEY_BYTES;
/// Longest Idempotency-Key.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

fn string_schema(min: Option<usize>, max: Option<usize>, pattern: &str) -> MetaSchemaRef {
    let mut schema = MetaSchema::new("string");
    schema.min_length = min;
    schema.max_length = max;
    schema.pattern = Some(pattern.to_string());
    MetaSchemaRef::Inline(Box::new(schema))
}

/// Implements poem-openapi's `Type` for a parameter newtype declared as a constrained string
/// (min length, max length, pattern) or with the schema an expression makes.
macro_rules! string_param {
    ($ty:ty, $min:expr, $max:expr, $pattern:expr) => {
        string_param!($ty, string_schema($min, $max, $pattern));
    };
    ($ty:ty, $schema:expr) => {
        impl Type for $ty {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                "string".into()
            }
            fn schema_ref() -> MetaSchemaRef {
                $schema
            }
            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }
            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(std::iter::once(self))
            }
        }
    };
}

/// The `{key}` path parameter: a valid [`Key`].
#[derive(Debug, Clone)]
pub struct KeyParam(pub Key);

string_param!(KeyParam, Some(1), Some(MAX_KEY_BYTES), KEY_PATTERN);

impl ParseFromParameter for KeyParam {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Key::parse(value).map(KeyParam).map_err(|e| ParseError::custom(e.to_string()))
    }
}

/// `If-Match` on writes: the version the key must still have.
#[derive(Debug, Clone, Copy)]
pub struct IfMatch(pub u64);

string_param!(IfMatch, Some(1), Some(23), IF_MATCH_PATTERN);

impl ParseFromParameter for IfMatch {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        parse_version_tag(value).map(IfMatch).ok_or_else(|| {
            ParseError::custom(format!("expected a quoted version such as \"42\", got '{}'", value.escape_debug()))
        })
    }
}

/// `If-None-Match` on writes: only `*` (apply only if the key does not exist).
#[derive(Debug, Clone, Copy)]
pub struct IfNoneMatchAny;

string_param!(IfNoneMatchAny, {
    let mut schema = MetaSchema::new("string");
    schema.enum_items = vec!["*".into()];
    MetaSchemaRef::Inline(Box::new(schema))
});

impl ParseFromParameter for IfNoneMatchAny {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        if value == "*" {
            Ok(IfNoneMatchAny)
        } else {
            Err(ParseError::custom(format!("only '*' is supported on writes, got '{}'", value.escape_debug())))
        }
    }
}

/// `Idempotency-Key`: 1 to 255 printable ASCII characters without spaces.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

string_param!(IdempotencyKey, Some(1), Some(MAX_IDEMPOTENCY_KEY_BYTES), IDEMPOTENCY_KEY_PATTERN);

impl ParseFromParameter for IdempotencyKey {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        if is_idempotency_key(value) {
            Ok(IdempotencyKey(value.to_string()))
        } else {
            Err(ParseError::custom(format!(
                "1 to {MAX_IDEMPOTENCY_KEY_BYTES} printable ASCII characters without spaces"
            )))
        }
    }
}

/// The `cursor` query parameter: the key to continue after, or None for the first page.
#[derive(Debug, Clone)]
pub struct CursorParam(pub Option<String>);

string_param!(CursorParam, Some(0), Some(MAX_CURSOR_CHARS), CURSOR_PATTERN);

impl ParseFromParameter for CursorParam {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        if value.is_empty() {
            return Ok(CursorParam(None));
        }
        decode_cursor(value)
            .map(|key| CursorParam(Some(key)))
            .ok_or_else(|| ParseError::custom("not a cursor returned by this API"))
    }
}

/// Accepts `"42"`, `W/"42"` and a bare `42` (at most 19 digits, so every match fits a u64).
pub fn parse_version_tag(raw: &str) -> Option<u64> {
    let inner = raw.strip_prefix("W/").unwrap_or(raw);
    let digits = match inner.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None if inner.len() == raw.len() => inner,
        None => return None,
    };
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub fn is_idempotency_key(raw: &str) -> bool {
    !raw.is_empty() && raw.len() <= MAX_IDEMPOTENCY_KEY_BYTES && raw.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether a GET's `If-None-Match` list names the current entity tag (or is `*`). Weak and
/// strong tags compare alike (weak comparison, as RFC 9110 asks for If-None-Match).
pub fn if_none_match_hits(raw: &str, etag: &str) -> bool {
    raw.split(',').map(str::trim).any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

pub fn is_task_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn encode_cursor(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The key a cursor stands for, or None for anything `encode_cursor` cannot have produced:
/// lowercase hex of UTF-8 (the pattern the spec declares). Works on bytes: the cursor is client
/// input and may hold any characters.
pub fn decode_cursor(c: &str) -> Option<String> {
    let c = c.as_bytes();
    if !c.len().is_multiple_of(2) || c.len() > 2 * MAX_KEY_BYTES {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        c.chunks_exact(2).map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?)).collect();
    String::from_utf8(bytes?).ok()
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod cursor_tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        for k in ["a", "users/ü/1", ""] {
            assert_eq!(decode_cursor(&encode_cursor(k)).as_deref(), Some(k));
        }
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor("abc"), None);
        assert_eq!(decode_cursor("+f"), None);
        assert_eq!(decode_cursor("6A"), None, "cursors are lowercase");
        // Multi-byte characters where a byte slice would cut one in half.
        assert_eq!(decode_cursor("\u{f1}\u{86}"), None);
        assert_eq!(decode_cursor("\u{1c6f6}N\u{bf}b"), None);
        assert_eq!(decode_cursor("a\u{e9}b"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        #[test]
        fn decoding_any_cursor_never_panics(c in "\\PC*|.*|[0-9a-fA-F\u{e9}\u{1f600}]{0,12}") {
            if let Some(key) = decode_cursor(&c) {
                proptest::prop_assert_eq!(encode_cursor(&key), c);
            }
        }

        #[test]
        fn cursors_round_trip_for_any_key(k in "\\PC{0,512}|.{0,40}") {
            if k.len() <= crate::domain::MAX_KEY_BYTES {
                proptest::prop_assert_eq!(decode_cursor(&encode_cursor(&k)), Some(k));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_idempotency_key_pattern_states_the_limit() {
        assert!(IDEMPOTENCY_KEY_PATTERN.ends_with(&format!("{{1,{MAX_IDEMPOTENCY_KEY_BYTES}}}$")));
    }

    use super::*;
    use proptest::prelude::*;

    fn full_match(pattern: &str, s: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(s)
    }

    #[test]
    fn version_tags() {
        assert_eq!(parse_version_tag("\"42\""), Some(42));
        assert_eq!(parse_version_tag("W/\"7\""), Some(7));
        assert_eq!(parse_version_tag("7"), Some(7));
        assert_eq!(parse_version_tag("9999999999999999999"), Some(9_999_999_999_999_999_999));
        for bad in ["x", "", "\"\"", "\"42", "42\"", "W/42", "+1", "\"-1\"", " 1", "W/W/\"1\"", "\"1\"\"", "*"] {
            assert_eq!(parse_version_tag(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn if_none_match_lists() {
        assert!(if_none_match_hits("\"3\"", "\"3\""));
        assert!(if_none_match_hits("W/\"3\"", "\"3\""));
        assert!(if_none_match_hits("\"1\", \"3\"", "\"3\""));
        assert!(if_none_match_hits("*", "\"3\""));
        assert!(!if_none_match_hits("\"33\"", "\"3\""));
        assert!(!if_none_match_hits("", "\"3\""));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn version_tags_accept_exactly_the_declared_pattern(s in "\\PC*|(W/)?\"?[0-9+-]{0,21}\"?") {
            prop_assert_eq!(parse_version_tag(&s).is_some(), full_match(IF_MATCH_PATTERN, &s), "{:?}", s);
        }

        #[test]
        fn version_tags_round_trip(v in 0u64..=9_999_999_999_999_999_999) {
            prop_assert_eq!(parse_version_tag(&format!("\"{v}\"")), Some(v));
            prop_assert_eq!(parse_version_tag(&format!("W/\"{v}\"")), Some(v));
            prop_assert_eq!(parse_version_tag(&v.to_string()), Some(v));
        }

        #[test]
        fn idempotency_keys_accept_exactly_the_declared_pattern(s in "\\PC{0,300}|[!-~ ]{0,300}|.{0,3}") {
            prop_assert_eq!(is_idempotency_key(&s), full_match(IDEMPOTENCY_KEY_PATTERN, &s), "{:?}", s);
            prop_assert_eq!(IdempotencyKey::parse_from_parameter(&s).is_ok(), is_idempotency_key(&s));
        }

        #[test]
        fn write_if_none_match_accepts_only_the_declared_wildcard(s in ".{0,3}|\\PC*") {
            prop_assert_eq!(IfNoneMatchAny::parse_from_parameter(&s).is_ok(), s == "*");
        }

        #[test]
        fn if_none_match_finds_the_current_tag_in_any_list(
            v in any::<u64>(),
            others in proptest::collection::vec(any::<u64>(), 0..5),
            weak in any::<bool>(),
            at in any::<prop::sample::Index>(),
        ) {
            let etag = format!("\"{v}\"");
            let mut tags: Vec<String> = others.iter().filter(|o| **o != v).map(|o| format!("\"{o}\"")).collect();
            prop_assert!(!if_none_match_hits(&tags.join(", "), &etag));
            let tag = if weak { format!("W/{etag}") } else { etag.clone() };
            tags.insert(at.index(tags.len() + 1), tag);
            prop_assert!(if_none_match_hits(&tags.join(", "), &etag));
        }

        #[test]
        fn header_parsers_never_panic(s in "\\PC*|.*") {
            let _ = parse_version_tag(&s);
            let _ = is_idempotency_key(&s);
            let _ = if_none_match_hits(&s, "\"1\"");
            let _ = IfMatch::parse_from_parameter(&s);
            let _ = IfNoneMatchAny::parse_from_parameter(&s);
        }

        #[test]
        fn cursors_accept_exactly_the_declared_pattern(
            c in "\\PC{0,8}|[0-9a-fA-F]{0,16}|([0-9a-f]{2}){0,8}|(c[0-9a-f]|e[0-9a-f]|f[0-9a-f]|[0-9a-f][0-9a-f]|[89ab][0-9a-f]){0,6}"
        ) {
            let declared = full_match(CURSOR_PATTERN, &c) && c.len() <= MAX_CURSOR_CHARS;
            prop_assert_eq!(CursorParam::parse_from_parameter(&c).is_ok(), declared, "{:?}", c);
        }

        #[test]
        fn every_issued_cursor_matches_the_declared_pattern(k in "\\PC{1,100}") {
            prop_assert!(full_match(CURSOR_PATTERN, &encode_cursor(&k)));
        }

        #[test]
        fn key_param_accepts_exactly_the_declared_constraints(s in "\\PC{0,600}|.{0,40}|[a\u{e9}\u{1f600}]{120,200}|\\PC{0,5}[\\x00-\\x1f\\x7f-\\x9f]\\PC{0,5}") {
            let declared = full_match(KEY_PATTERN, &s) && s.len() <= MAX_KEY_BYTES;
            prop_assert_eq!(KeyParam::parse_from_parameter(&s).is_ok(), declared, "{:?}", s);
        }
    }
}
