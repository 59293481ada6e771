//! Decode Nomad's cty-msgpack configuration bytes into your own `#[derive(Deserialize)]` types.
//!
//! Nomad hands a driver its configuration twice: the agent-side plugin config
//! (`SetConfigRequest.msgpack_config`) and each task's `config { ... }` block
//! (`TaskConfig.msgpack_driver_config`). Both are a [cty] value encoded by go-cty's
//! `msgpack.Marshal`, after Nomad has already checked the job against the schema the
//! driver declared. This module turns those bytes straight into a Rust struct:
//!
//! ```
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct TaskConfig {
//!     command: String,
//!     #[serde(default)]
//!     args: Vec<String>,
//!     count: Option<u32>,
//! }
//!
//! // {"args": nil, "command": "/bin/echo", "count": "42"}
//! let bytes = b"\x83\xa4args\xc0\xa7command\xa9/bin/echo\xa5count\xa242";
//! let config: TaskConfig = nomad_driver_sdk::cty::from_slice(bytes).unwrap();
//! assert_eq!(config.command, "/bin/echo");
//! assert!(config.args.is_empty());
//! assert_eq!(config.count, Some(42));
//! ```
//!
//! # Why this is not plain msgpack
//!
//! cty's encoding differs from what a generic msgpack decoder expects in a few ways,
//! and each of them is handled here:
//!
//! - **Every declared attribute is sent**, with `nil` when the job left it unset. When a
//!   map is decoded as a struct, `nil` entries are skipped, so `#[serde(default)]` and
//!   `Option<T>` behave as if the key were absent.
//! - **A number may arrive as an int, a float, or a string** holding its decimal text
//!   (cty numbers are arbitrary precision; `0.1` and `1e30` travel as `"0.1"` and
//!   `"1000000000000000000000000000000"`). Every integer and float target accepts all
//!   three; integers are checked to be whole and in range.
//! - **A value typed `any` by the caller** may be wrapped as `[bin(type JSON), value]`
//!   (cty's DynamicPseudoType encoding). Nomad encodes with the concrete type so this
//!   practically never occurs, but the wrapper is unwrapped when recognised.
//! - **Unknown values** (ext type 0) cannot be configuration; they are an error.
//! - Empty input means an empty configuration (an empty map).
//!
//! Errors carry the path of the field that failed (`mount[1].source`), so a driver can
//! return them to the operator as they are: `field "count": expected a whole number
//! (u16), found number 1.5`.
//!
//! [cty]: https://github.com/zclconf/go-cty

use std::fmt;

use rmpv::Value;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, Expected, MapAccess, SeqAccess,
    Unexpected, VariantAccess, Visitor,
};

/// How deeply msgpack containers may nest before the input is refused.
///
/// Real configurations nest a handful of levels. The limit keeps both the msgpack reader and
/// the recursive deserialization within a small stack (a wasm guest has 1 MiB by default).
/// rmpv counts a container twice (the value and its body), hence the factor of two.
const MAX_NESTING: usize = 128;

/// The msgpack ext type cty uses for an unknown (not yet computed) value.
const EXT_UNKNOWN: i8 = 0;

/// Longest piece of a string quoted back in an error message, in characters.
const QUOTE_LIMIT: usize = 40;

/// Decodes cty-msgpack bytes into `T`.
///
/// Empty input is an empty configuration and decodes as an empty map. Trailing bytes after
/// the value are an error.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let value = decode_value(bytes)?;
    from_value(&value)
}

/// Deserializes `T` from an already decoded msgpack value, with the same cty rules as
/// [`from_slice`]. Strings and byte buffers may be borrowed from `value`.
pub fn from_value<'de, T: de::Deserialize<'de>>(value: &'de Value) -> Result<T, Error> {
    T::deserialize(ValueDeserializer { value })
}

/// Decodes cty-msgpack bytes into a generic msgpack [`Value`] without interpreting them.
///
/// Empty input decodes as an empty map. Trailing bytes after the value, truncated input and
/// nesting deeper than 128 levels are errors.
pub fn decode_value(bytes: &[u8]) -> Result<Value, Error> {
    if bytes.is_empty() {
        return Ok(Value::Map(Vec::new()));
    }
    let mut rest = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut rest, 2 * MAX_NESTING)
        .map_err(|e| Error::new(format!("invalid msgpack: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::new(format!(
            "invalid msgpack: {} trailing bytes after the value",
            rest.len()
        )));
    }
    Ok(value)
}

/// Why cty-msgpack bytes could not be decoded into the requested type, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Path from the root, e.g. `mount[1].source`; empty for the root itself.
    path: String,
    message: String,
}

impl Error {
    fn new(message: impl Into<String>) -> Self {
        Error {
            path: String::new(),
            message: message.into(),
        }
    }

    fn at_key(key: &str, message: impl Into<String>) -> Self {
        Error {
            path: render_key(key),
            message: message.into(),
        }
    }

    /// The path of the field that failed, e.g. `mount[1].source` or `env["MY VAR"]`;
    /// `None` when the error concerns the configuration as a whole.
    pub fn field(&self) -> Option<&str> {
        if self.path.is_empty() {
            None
        } else {
            Some(&self.path)
        }
    }

    /// What was expected and what was found, without the field path.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Records that the error happened inside `segment` of the enclosing value. Errors are
    /// built innermost first, so each enclosing level prepends its own segment.
    fn within(mut self, segment: &str) -> Self {
        let joiner = if self.path.is_empty() || self.path.starts_with('[') {
            ""
        } else {
            "."
        };
        self.path = format!("{segment}{joiner}{}", self.path);
        self
    }

    fn within_key(self, key: &Value) -> Self {
        let segment = match key {
            Value::String(s) => match s.as_str() {
                Some(s) => render_key(s),
                None => "[?]".to_owned(),
            },
            Value::Integer(n) => format!("[{n}]"),
            _ => "[?]".to_owned(),
        };
        self.within(&segment)
    }

    fn within_index(self, index: usize) -> Self {
        self.within(&format!("[{index}]"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field() {
            Some(field) => write!(f, "field \"{field}\": {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::new(msg.to_string())
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Error::new(format!(
            "expected {exp}, found {}",
            describe_unexpected(unexp)
        ))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Error::new(format!(
            "invalid value: expected {exp}, found {}",
            describe_unexpected(unexp)
        ))
    }

    fn invalid_length(len: usize, exp: &dyn Expected) -> Self {
        Error::new(format!("expected {exp}, found {len} elements"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Error::new(format!(
            "unknown variant {}, expected {}",
            quote(variant),
            one_of(expected)
        ))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Error::at_key(
            field,
            format!("unknown field, expected {}", one_of(expected)),
        )
    }

    fn missing_field(field: &'static str) -> Self {
        Error::at_key(field, "missing required field")
    }

    fn duplicate_field(field: &'static str) -> Self {
        Error::at_key(field, "duplicate field")
    }
}

/// A key as a path segment: bare when it reads as an identifier, quoted in brackets otherwise.
fn render_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        key.to_owned()
    } else {
        format!("[{key:?}]")
    }
}

fn one_of(names: &[&str]) -> String {
    match names {
        [] => "no fields".to_owned(),
        [one] => format!("`{one}`"),
        many => {
            let list: Vec<String> = many.iter().map(|n| format!("`{n}`")).collect();
            format!("one of {}", list.join(", "))
        }
    }
}

/// Debug-quotes `s`, cut to [`QUOTE_LIMIT`] characters.
fn quote(s: &str) -> String {
    let mut chars = s.chars();
    let head: String = chars.by_ref().take(QUOTE_LIMIT).collect();
    if chars.next().is_some() {
        format!("{head:?}...")
    } else {
        format!("{head:?}")
    }
}

/// How a value found in the input is named in error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Nil => "null".to_owned(),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Integer(n) => format!("integer {n}"),
        Value::F32(f) => format!("number {f}"),
        Value::F64(f) => format!("number {f}"),
        Value::String(s) => match s.as_str() {
            Some(s) => format!("string {}", quote(s)),
            None => "a string that is not valid UTF-8".to_owned(),
        },
        Value::Binary(b) => format!("binary data ({} bytes)", b.len()),
        Value::Array(items) => format!("a list of {} elements", items.len()),
        Value::Map(entries) => format!("a map of {} entries", entries.len()),
        Value::Ext(EXT_UNKNOWN, _) => "an unknown value".to_owned(),
        Value::Ext(ty, _) => format!("msgpack extension type {ty}"),
    }
}

fn describe_unexpected(unexp: Unexpected<'_>) -> String {
    match unexp {
        Unexpected::Bool(b) => format!("boolean {b}"),
        Unexpected::Unsigned(n) => format!("integer {n}"),
        Unexpected::Signed(n) => format!("integer {n}"),
        Unexpected::Float(f) => format!("number {f}"),
        Unexpected::Char(c) => format!("character {c:?}"),
        Unexpected::Str(s) => format!("string {}", quote(s)),
        Unexpected::Bytes(b) => format!("binary data ({} bytes)", b.len()),
        Unexpected::Unit => "null".to_owned(),
        Unexpected::Seq => "a list".to_owned(),
        Unexpected::Map => "a map".to_owned(),
        other => other.to_string(),
    }
}

fn type_error(expected: &str, found: &Value) -> Error {
    Error::new(format!("expected {expected}, found {}", describe(found)))
}

/// Strips cty's DynamicPseudoType wrapper and refuses unknown values.
///
/// `want_seq` is true when the caller asked for a sequence: the wrapper is itself a
/// two-element array, so it is only taken apart then when it declares a collection or
/// tuple type and really wraps a list.
fn resolve(value: &Value, want_seq: bool) -> Result<&Value, Error> {
    let value = unwrap_dynamic(value, want_seq);
    match value {
        Value::Ext(EXT_UNKNOWN, _) => Err(Error::new("value is unknown (not yet computed)")),
        Value::Ext(ty, _) => Err(Error::new(format!(
            "unsupported msgpack extension type {ty}"
        ))),
        _ => Ok(value),
    }
}

fn unwrap_dynamic(value: &Value, want_seq: bool) -> &Value {
    if let Value::Array(items) = value
        && let [Value::Binary(descriptor), inner] = items.as_slice()
        && is_type_descriptor(descriptor)
    {
        let declares_list = descriptor.first() == Some(&b'[');
        if !want_seq || (declares_list && matches!(inner, Value::Array(_) | Value::Nil)) {
            return inner;
        }
    }
    value
}

/// Whether `bytes` is a cty JSON type descriptor such as `"string"` or `["list","number"]`.
fn is_type_descriptor(bytes: &[u8]) -> bool {
    const PRIMITIVES: [&[u8]; 4] = [b"\"string\"", b"\"number\"", b"\"bool\"", b"\"dynamic\""];
    const COMPOUND: [&[u8]; 6] = [
        b"[\"list\",",
        b"[\"set\",",
        b"[\"map\",",
        b"[\"object\",",
        b"[\"tuple\",",
        b"[\"capsule\",",
    ];
    PRIMITIVES.contains(&bytes)
        || (bytes.ends_with(b"]") && COMPOUND.iter().any(|p| bytes.starts_with(p)))
}

fn is_nil(value: &Value) -> bool {
    matches!(unwrap_dynamic(value, false), Value::Nil)
}

// ---------------------------------------------------------------------------------------
// Numbers

/// A whole number as sign and magnitude, wide enough for every Rust integer type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Whole {
    negative: bool,
    magnitude: u128,
}

impl Whole {
    fn from_i128(n: i128) -> Self {
        Whole {
            negative: n < 0,
            magnitude: n.unsigned_abs(),
        }
    }

    fn convert<T: TryFrom<i128> + TryFrom<u128>>(self) -> Option<T> {
        if !self.negative || self.magnitude == 0 {
            return T::try_from(self.magnitude).ok();
        }
        let signed = if self.magnitude == i128::MIN.unsigned_abs() {
            i128::MIN
        } else {
            -i128::try_from(self.magnitude).ok()?
        };
        T::try_from(signed).ok()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum WholeError {
    NotANumber,
    Fractional,
    OutOfRange,
}

/// The decimal text of a number, split into its parts (`-12.50e3`).
#[derive(Debug, PartialEq, Eq)]
struct Decimal<'a> {
    negative: bool,
    int_digits: &'a str,
    frac_digits: &'a str,
    exponent: i64,
}

/// Parses `[+-]digits[.digits][(e|E)[+-]digits]` (digits needed on at least one side of
/// the point), the forms cty and JSON use. Anything else is not a number.
fn parse_decimal(text: &str) -> Option<Decimal<'_>> {
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let (int_digits, frac_digits) = match mantissa.find('.') {
        Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
        None => (mantissa, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int_digits.is_empty() && frac_digits.is_empty())
        || !all_digits(int_digits)
        || !all_digits(frac_digits)
    {
        return None;
    }
    let exponent = match exponent {
        None => 0,
        Some(exp) => {
            let (exp_negative, digits) = match exp.as_bytes().first() {
                Some(b'-') => (true, &exp[1..]),
                Some(b'+') => (false, &exp[1..]),
                _ => (false, exp),
            };
            if digits.is_empty() || !all_digits(digits) {
                return None;
            }
            // Saturate: anything beyond a few hundred is out of range for every target
            // anyway, and the digit loops below are bounded by the text length.
            let magnitude = digits.bytes().fold(0i64, |acc, d| {
                acc.saturating_mul(10).saturating_add(i64::from(d - b'0'))
            });
            if exp_negative { -magnitude } else { magnitude }
        }
    };
    Some(Decimal {
        negative,
        int_digits,
        frac_digits,
        exponent,
    })
}

impl Decimal<'_> {
    fn to_whole(&self) -> Result<Whole, WholeError> {
        let digits = self.int_digits.bytes().chain(self.frac_digits.bytes());
        let count = (self.int_digits.len() + self.frac_digits.len()) as i128;
        // Where the decimal point falls, counted in digits from the left.
        let point = count - self.frac_digits.len() as i128 + i128::from(self.exponent);
        let mut magnitude: u128 = 0;
        for (i, d) in digits.enumerate() {
            let digit = u128::from(d - b'0');
            if (i as i128) < point {
                magnitude = magnitude
                    .checked_mul(10)
                    .and_then(|m| m.checked_add(digit))
                    .ok_or(WholeError::OutOfRange)?;
            } else if digit != 0 {
                return Err(WholeError::Fractional);
            }
        }
        // Zeros implied by an exponent reaching past the written digits. Bounded: more
        // than 39 of them overflow u128.
        if magnitude != 0 {
            let mut zeros = count;
            while zeros < point {
                magnitude = magnitude.checked_mul(10).ok_or(WholeError::OutOfRange)?;
                zeros += 1;
            }
        }
        Ok(Whole {
            negative: self.negative,
            magnitude,
        })
    }
}

fn whole_number(value: &Value) -> Result<Whole, WholeError> {
    match value {
        Value::Integer(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Ok(Whole {
                negative: false,
                magnitude: u128::from(u),
            }),
            (None, Some(i)) => Ok(Whole::from_i128(i128::from(i))),
            (None, None) => Err(WholeError::NotANumber),
        },
        Value::F32(f) => whole_from_float(f64::from(*f)),
        Value::F64(f) => whole_from_float(*f),
        Value::String(s) => match s.as_str().and_then(parse_decimal) {
            Some(decimal) => decimal.to_whole(),
            None => Err(WholeError::NotANumber),
        },
        _ => Err(WholeError::NotANumber),
    }
}

fn whole_from_float(f: f64) -> Result<Whole, WholeError> {
    // 2^127: every whole float below it in magnitude converts exactly.
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if f.is_nan() || f.fract() != 0.0 {
        if f.is_infinite() {
            return Err(WholeError::OutOfRange);
        }
        return Err(WholeError::Fractional);
    }
    if f.abs() >= LIMIT {
        return Err(WholeError::OutOfRange);
    }
    Ok(Whole::from_i128(f as i128))
}

/// Reads a number for a float target: int, float, or decimal text.
fn float_number(value: &Value, target: &str) -> Result<f64, Error> {
    let f = match value {
        Value::Integer(n) => n.as_f64(),
        Value::F32(f) => Some(f64::from(*f)),
        Value::F64(f) => Some(*f),
        Value::String(s) => match s.as_str() {
            Some(text) if parse_decimal(text).is_some() => {
                let f = text.parse::<f64>().ok();
                if f.is_some_and(f64::is_infinite) {
                    return Err(Error::new(format!(
                        "expected a number in the range of {target}, found {}",
                        describe(value)
                    )));
                }
                f
            }
            _ => None,
        },
        _ => None,
    };
    f.ok_or_else(|| type_error(&format!("a number ({target})"), value))
}

macro_rules! deserialize_integer {
    ($($method:ident => $ty:ident, $visit:ident;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let value = resolve(self.value, false)?;
            let target = stringify!($ty);
            let whole = whole_number(value).map_err(|e| match e {
                WholeError::NotANumber => type_error(&format!("a number ({target})"), value),
                WholeError::Fractional => {
                    type_error(&format!("a whole number ({target})"), value)
                }
                WholeError::OutOfRange => out_of_range(target, $ty::MIN, $ty::MAX, value),
            })?;
            match whole.convert::<$ty>() {
                Some(n) => visitor.$visit(n),
                None => Err(out_of_range(target, $ty::MIN, $ty::MAX, value)),
            }
        }
    )*};
}

fn out_of_range(
    target: &str,
    min: impl fmt::Display,
    max: impl fmt::Display,
    found: &Value,
) -> Error {
    type_error(
        &format!("a whole number in the range of {target} ({min} to {max})"),
        found,
    )
}

// ---------------------------------------------------------------------------------------
// The deserializer

/// A serde deserializer over one decoded msgpack value, applying cty's conventions.
struct ValueDeserializer<'de> {
    value: &'de Value,
}

impl<'de> ValueDeserializer<'de> {
    fn visit_str_value<V: Visitor<'de>>(value: &'de Value, visitor: V) -> Result<V::Value, Error> {
        match value {
            Value::String(s) => match s.as_str() {
                Some(s) => visitor.visit_borrowed_str(s),
                None => Err(type_error("a string", value)),
            },
            _ => Err(type_error("a string", value)),
        }
    }
}

impl<'de> de::Deserializer<'de> for ValueDeserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let value = resolve(self.value, false)?;
        match value {
            Value::Nil => visitor.visit_unit(),
            Value::Boolean(b) => visitor.visit_bool(*b),
            Value::Integer(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => visitor.visit_u64(u),
                (None, Some(i)) => visitor.visit_i64(i),
                (None, None) => Err(type_error("a number", value)),
            },
            Value::F32(f) => visitor.visit_f32(*f),
            Value::F64(f) => visitor.visit_f64(*f),
            Value::String(_) => Self::visit_str_value(value, visitor),
            Value::Binary(b) => visitor.visit_borrowed_bytes(b),
            Value::Array(items) => visit_array(items, visitor),
            Value::Map(entries) => visit_map(entries, false, visitor),
            Value::Ext(..) => Err(type_error("a cty value", value)),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match resolve(self.value, false)? {
            Value::Boolean(b) => visitor.visit_bool(*b),
            other => Err(type_error("a boolean", other)),
        }
    }

    deserialize_integer! {
        deserialize_i8 => i8, visit_i8;
        deserialize_i16 => i16, visit_i16;
        deserialize_i32 => i32, visit_i32;
        deserialize_i64 => i64, visit_i64;
        deserialize_i128 => i128, visit_i128;
        deserialize_u8 => u8, visit_u8;
        deserialize_u16 => u16, visit_u16;
        deserialize_u32 => u32, visit_u32;
        deserialize_u64 => u64, visit_u64;
        deserialize_u128 => u128, visit_u128;
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let value = resolve(self.value, false)?;
        let f = float_number(value, "f32")?;
        let narrow = f as f32;
        if narrow.is_infinite() && !f.is_infinite() {
            return Err(type_error("a number in the range of f32", value));
        }
        visitor.visit_f32(narrow)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let value = resolve(self.value, false)?;
        visitor.visit_f64(float_number(value, "f64")?)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let value = resolve(self.value, false)?;
        if let Value::String(s) = value
            && let Some(s) = s.as_str()
        {
            let mut chars = s.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                return visitor.visit_char(c);
            }
        }
        Err(type_error("a single character", value))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        Self::visit_str_value(resolve(self.value, false)?, visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match resolve(self.value, false)? {
            Value::Binary(b) => visitor.visit_borrowed_bytes(b),
            Value::String(s) => visitor.visit_borrowed_bytes(s.as_bytes()),
            Value::Array(items) => visit_array(items, visitor),
            other => Err(type_error("binary data", other)),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match resolve(self.value, false)? {
            Value::Nil => visitor.visit_none(),
            value => visitor.visit_some(ValueDeserializer { value }),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match resolve(self.value, false)? {
            Value::Nil => visitor.visit_unit(),
            other => Err(type_error("null", other)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match resolve(self.value, true)? {
            Value::Array(items) => visit_array(items, visitor),
            other => Err(type_error("a list", other)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match resolve(self.value, false)? {
            Value::Map(entries) => visit_map(entries, false, visitor),
            other => Err(type_error("a map", other)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match resolve(self.value, false)? {
            // Nomad sends every declared attribute; null ones count as absent.
            Value::Map(entries) => visit_map(entries, true, visitor),
            Value::Array(items) => visit_array(items, visitor),
            other => Err(type_error(&format!("an object ({name})"), other)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let value = resolve(self.value, false)?;
        match value {
            Value::String(_) => visitor.visit_enum(EnumDeserializer {
                variant: value,
                content: None,
            }),
            // Externally tagged: the one entry that is set names the variant. Counting only
            // non-null entries lets a cty object of optional blocks act as a choice.
            Value::Map(entries) => {
                let mut set = entries.iter().filter(|(_, v)| !is_nil(v));
                match (set.next(), set.next()) {
                    (Some((key, content)), None) => visitor.visit_enum(EnumDeserializer {
                        variant: key,
                        content: Some(content),
                    }),
                    _ => Err(type_error(
                        &format!("{name}: a string or a map with exactly one non-null entry"),
                        value,
                    )),
                }
            }
            other => Err(type_error(
                &format!("{name}: a string or a map with exactly one non-null entry"),
                other,
            )),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match resolve(self.value, false)? {
            Value::Binary(b) => visitor.visit_borrowed_bytes(b),
            Value::Integer(n) => match n.as_u64() {
                Some(u) => visitor.visit_u64(u),
                None => Err(type_error("a field name", self.value)),
            },
            other => Self::visit_str_value(other, visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // Ignored fields are not inspected, so an unknown value there is no error.
        visitor.visit_unit()
    }
}

fn visit_array<'de, V: Visitor<'de>>(items: &'de [Value], visitor: V) -> Result<V::Value, Error> {
    let mut seq = SeqDeserializer {
        items: items.iter().enumerate(),
    };
    let out = visitor.visit_seq(&mut seq)?;
    let left = seq.items.len();
    if left > 0 {
        return Err(Error::new(format!(
            "expected {} elements, found {}",
            items.len() - left,
            items.len()
        )));
    }
    Ok(out)
}

fn visit_map<'de, V: Visitor<'de>>(
    entries: &'de [(Value, Value)],
    skip_nil: bool,
    visitor: V,
) -> Result<V::Value, Error> {
    let mut map = MapDeserializer {
        entries: entries.iter(),
        pending: None,
        skip_nil,
    };
    let out = visitor.visit_map(&mut map)?;
    if let Some((key, _)) = map.next_entry() {
        return Err(Error::new("unexpected extra map entry").within_key(key));
    }
    Ok(out)
}

struct SeqDeserializer<'de> {
    items: std::iter::Enumerate<std::slice::Iter<'de, Value>>,
}

impl<'de> SeqAccess<'de> for SeqDeserializer<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.items.next() {
            None => Ok(None),
            Some((index, value)) => seed
                .deserialize(ValueDeserializer { value })
                .map(Some)
                .map_err(|e| e.within_index(index)),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDeserializer<'de> {
    entries: std::slice::Iter<'de, (Value, Value)>,
    pending: Option<&'de (Value, Value)>,
    skip_nil: bool,
}

impl<'de> MapDeserializer<'de> {
    fn next_entry(&mut self) -> Option<&'de (Value, Value)> {
        let skip_nil = self.skip_nil;
        self.entries.find(|(_, v)| !(skip_nil && is_nil(v)))
    }
}

impl<'de> MapAccess<'de> for MapDeserializer<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.next_entry() {
            None => Ok(None),
            Some(entry) => {
                self.pending = Some(entry);
                seed.deserialize(ValueDeserializer { value: &entry.0 })
                    .map(Some)
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.pending.take() {
            Some((key, value)) => seed
                .deserialize(ValueDeserializer { value })
                .map_err(|e| e.within_key(key)),
            None => Err(Error::new("map value requested before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        if self.skip_nil {
            None
        } else {
            Some(self.entries.len())
        }
    }
}

struct EnumDeserializer<'de> {
    variant: &'de Value,
    content: Option<&'de Value>,
}

impl<'de> EnumAccess<'de> for EnumDeserializer<'de> {
    type Error = Error;
    type Variant = VariantDeserializer<'de>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), Error> {
        let tag = seed.deserialize(ValueDeserializer {
            value: self.variant,
        })?;
        Ok((
            tag,
            VariantDeserializer {
                variant: self.variant,
                content: self.content,
            },
        ))
    }
}

struct VariantDeserializer<'de> {
    variant: &'de Value,
    content: Option<&'de Value>,
}

impl<'de> VariantDeserializer<'de> {
    fn content(&self, expected: &str) -> Result<&'de Value, Error> {
        self.content
            .ok_or_else(|| type_error(expected, self.variant))
    }
}

impl<'de> VariantAccess<'de> for VariantDeserializer<'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.content {
            None => Ok(()),
            Some(value) if is_nil(value) => Ok(()),
            Some(value) => {
                Err(type_error("nothing (a unit variant)", value).within_key(self.variant))
            }
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        let value = self.content("a map holding the variant's value")?;
        seed.deserialize(ValueDeserializer { value })
            .map_err(|e| e.within_key(self.variant))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        let value = self.content("a map holding the variant's list")?;
        de::Deserializer::deserialize_tuple(ValueDeserializer { value }, len, visitor)
            .map_err(|e| e.within_key(self.variant))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let value = self.content("a map holding the variant's object")?;
        de::Deserializer::deserialize_struct(ValueDeserializer { value }, "", fields, visitor)
            .map_err(|e| e.within_key(self.variant))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn whole(text: &str) -> Result<Whole, WholeError> {
        parse_decimal(text)
            .ok_or(WholeError::NotANumber)?
            .to_whole()
    }

    fn w(negative: bool, magnitude: u128) -> Result<Whole, WholeError> {
        Ok(Whole {
            negative,
            magnitude,
        })
    }

    #[test]
    fn decimal_text_to_whole_numbers() {
        assert_eq!(whole("42"), w(false, 42));
        assert_eq!(whole("-42"), w(true, 42));
        assert_eq!(whole("+7"), w(false, 7));
        assert_eq!(whole("42.000"), w(false, 42));
        assert_eq!(whole("4.2e1"), w(false, 42));
        assert_eq!(whole("1e3"), w(false, 1000));
        assert_eq!(whole("4200e-2"), w(false, 42));
        assert_eq!(whole("0.0"), w(false, 0));
        assert_eq!(whole("0e999999999999999999999"), w(false, 0));
        assert_eq!(whole(".5e1"), w(false, 5));
        assert_eq!(
            whole("1000000000000000000000000000000"),
            w(false, 10u128.pow(30))
        );
        assert_eq!(whole("0.1"), Err(WholeError::Fractional));
        assert_eq!(whole("1.5"), Err(WholeError::Fractional));
        assert_eq!(whole("15e-1"), Err(WholeError::Fractional));
        assert_eq!(whole("1e39"), Err(WholeError::OutOfRange));
        assert_eq!(whole("1e99999999999999999999"), Err(WholeError::OutOfRange));
        for bad in [
            "", "-", ".", "1e", "1e+", "abc", "1.2.3", "0x10", " 1", "1 ", "inf", "NaN",
        ] {
            assert_eq!(whole(bad), Err(WholeError::NotANumber), "{bad:?}");
        }
    }

    #[test]
    fn whole_converts_with_range_checks() {
        let min = Whole::from_i128(i128::MIN);
        assert_eq!(min.convert::<i128>(), Some(i128::MIN));
        assert_eq!(min.convert::<i64>(), None);
        assert_eq!(Whole::from_i128(-1).convert::<u8>(), None);
        assert_eq!(Whole::from_i128(-128).convert::<i8>(), Some(-128));
        assert_eq!(Whole::from_i128(255).convert::<u8>(), Some(255));
        assert_eq!(Whole::from_i128(256).convert::<u8>(), None);
        let negative_zero = Whole {
            negative: true,
            magnitude: 0,
        };
        assert_eq!(negative_zero.convert::<u32>(), Some(0));
        let huge = Whole {
            negative: false,
            magnitude: u128::MAX,
        };
        assert_eq!(huge.convert::<u128>(), Some(u128::MAX));
        assert_eq!(huge.convert::<i128>(), None);
    }

    #[test]
    fn floats_to_whole_numbers() {
        assert_eq!(whole_from_float(3.0), w(false, 3));
        assert_eq!(whole_from_float(-3.0), w(true, 3));
        assert_eq!(whole_from_float(1.5), Err(WholeError::Fractional));
        assert_eq!(whole_from_float(f64::NAN), Err(WholeError::Fractional));
        assert_eq!(whole_from_float(f64::INFINITY), Err(WholeError::OutOfRange));
        assert_eq!(whole_from_float(1e39), Err(WholeError::OutOfRange));
    }

    #[test]
    fn paths_render_like_rust_accessors() {
        let err = Error::new("boom")
            .within("source")
            .within_index(1)
            .within("mount");
        assert_eq!(err.field(), Some("mount[1].source"));
        let err = Error::new("boom")
            .within(&render_key("MY VAR"))
            .within("env");
        assert_eq!(err.field(), Some("env[\"MY VAR\"]"));
        assert_eq!(err.to_string(), "field \"env[\"MY VAR\"]\": boom");
        assert_eq!(Error::new("boom").field(), None);
        assert_eq!(Error::new("boom").to_string(), "boom");
    }

    #[test]
    fn type_descriptors_are_recognised_strictly() {
        assert!(is_type_descriptor(b"\"string\""));
        assert!(is_type_descriptor(b"[\"list\",\"string\"]"));
        assert!(is_type_descriptor(b"[\"object\",{\"a\":\"number\"}]"));
        assert!(!is_type_descriptor(b"string"));
        assert!(!is_type_descriptor(b"\"strin"));
        assert!(!is_type_descriptor(b"[\"list\""));
        assert!(!is_type_descriptor(b""));
    }

    #[test]
    fn long_strings_are_cut_in_messages() {
        let long = "x".repeat(100);
        let text = quote(&long);
        assert!(text.len() < 50, "{text}");
        assert!(text.ends_with("..."));
    }
}
