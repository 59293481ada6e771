//! cty's value model, as far as Nomad's config decoding needs it: exact
//! decimal numbers, types, values, go-cty's conversions (with its error
//! messages) and go-cty's msgpack encoding.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use num_bigint::BigUint;
use unicode_normalization::UnicodeNormalization;

/// Largest decimal exponent accepted in a number; beyond it a number is
/// refused rather than expanded into a huge string.
const MAX_EXP: i64 = 4096;

/// An exact decimal number: `(-1)^neg * digits * 10^exp`.
///
/// cty keeps numbers as 512-bit binary floats parsed from their decimal
/// text; for the numbers people write in configs that is the decimal value
/// itself, which is what this type keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dec {
    neg: bool,
    /// Significant digits without leading or trailing zeros; empty is zero.
    digits: String,
    exp: i64,
}

impl Dec {
    /// Parses decimal text: `[+-]digits[.digits][e[+-]digits]`.
    pub fn parse(text: &str) -> Option<Dec> {
        let b = text.as_bytes();
        let mut i = 0;
        let mut neg = false;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            neg = b[i] == b'-';
            i += 1;
        }
        let mut digits = String::new();
        let mut exp: i64 = 0;
        let mut seen_digit = false;
        while i < b.len() && b[i].is_ascii_digit() {
            digits.push(b[i] as char);
            seen_digit = true;
            i += 1;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                digits.push(b[i] as char);
                exp -= 1;
                seen_digit = true;
                i += 1;
            }
        }
        if !seen_digit {
            return None;
        }
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            i += 1;
            let mut eneg = false;
            if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
                eneg = b[i] == b'-';
                i += 1;
            }
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if start == i || i - start > 6 {
                return None;
            }
            let e: i64 = text[start..i].parse().ok()?;
            exp += if eneg { -e } else { e };
        }
        if i != b.len() {
            return None;
        }
        Dec::normalized(neg, digits, exp)
    }

    fn normalized(neg: bool, digits: String, mut exp: i64) -> Option<Dec> {
        let trimmed = digits.trim_start_matches('0');
        let without_trailing = trimmed.trim_end_matches('0');
        exp += (trimmed.len() - without_trailing.len()) as i64;
        if without_trailing.is_empty() {
            return Some(Dec::zero());
        }
        // Bound the magnitude: the most significant digit's exponent.
        let top = exp + without_trailing.len() as i64;
        if !(-MAX_EXP..=MAX_EXP).contains(&top) || !(-MAX_EXP..=MAX_EXP).contains(&exp) {
            return None;
        }
        Some(Dec {
            neg,
            digits: without_trailing.to_string(),
            exp,
        })
    }

    pub fn zero() -> Dec {
        Dec {
            neg: false,
            digits: String::new(),
            exp: 0,
        }
    }

    pub fn from_i64(v: i64) -> Dec {
        Dec::parse(&v.to_string()).unwrap_or_else(Dec::zero)
    }

    /// The exact value of a finite `f64` as written by its shortest
    /// round-trip decimal form (what a person wrote, for parsed literals).
    pub fn from_f64(v: f64) -> Option<Dec> {
        if !v.is_finite() {
            return None;
        }
        Dec::parse(&format!("{v:e}"))
    }

    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// The value if it is an integer that fits an `i64`.
    pub fn to_i64(&self) -> Option<i64> {
        if self.is_zero() {
            return Some(0);
        }
        if self.exp < 0 || self.digits.len() as i64 + self.exp > 19 {
            return None;
        }
        let mut s = self.digits.clone();
        for _ in 0..self.exp {
            s.push('0');
        }
        let v: i128 = s.parse().ok()?;
        i64::try_from(if self.neg { -v } else { v }).ok()
    }

    /// The value if an `f64` holds it exactly.
    pub fn to_f64_exact(&self) -> Option<f64> {
        if self.is_zero() {
            return Some(0.0);
        }
        let f: f64 = format!("{}e{}", self.digits, self.exp).parse().ok()?;
        if !f.is_finite() || f == 0.0 {
            return None;
        }
        let bits = f.to_bits();
        let raw_exp = ((bits >> 52) & 0x7ff) as i64;
        let frac = bits & ((1u64 << 52) - 1);
        let (mant, e2) = if raw_exp == 0 {
            (frac, -1074)
        } else {
            (frac | (1u64 << 52), raw_exp - 1075)
        };
        let d: BigUint = self.digits.parse().ok()?;
        let ten = BigUint::from(10u32);
        let pow10 = |n: i64| ten.pow(n.unsigned_abs() as u32);
        let (mut lhs, mut lhs_den) = (d, BigUint::from(1u32));
        if self.exp >= 0 {
            lhs *= pow10(self.exp);
        } else {
            lhs_den = pow10(self.exp);
        }
        let (mut rhs, mut rhs_den) = (BigUint::from(mant), BigUint::from(1u32));
        if e2 >= 0 {
            rhs <<= e2 as u64;
        } else {
            rhs_den <<= e2.unsigned_abs();
        }
        if lhs * rhs_den == rhs * lhs_den {
            Some(if self.neg { -f } else { f })
        } else {
            None
        }
    }

    /// An `f64` close to the value (for comparisons and functions).
    pub fn to_f64_lossy(&self) -> f64 {
        if self.is_zero() {
            return 0.0;
        }
        let f: f64 = format!("{}e{}", self.digits, self.exp)
            .parse()
            .unwrap_or(f64::INFINITY);
        if self.neg { -f } else { f }
    }

    /// Plain decimal notation, as go's `big.Float.Text('f', -1)` prints
    /// cty numbers: no exponent, no trailing zeros.
    pub fn text(&self) -> String {
        if self.is_zero() {
            return "0".into();
        }
        let mut s = String::new();
        if self.neg {
            s.push('-');
        }
        if self.exp >= 0 {
            s.push_str(&self.digits);
            for _ in 0..self.exp {
                s.push('0');
            }
        } else {
            let point = self.digits.len() as i64 + self.exp;
            if point > 0 {
                let (int, frac) = self.digits.split_at(point as usize);
                s.push_str(int);
                s.push('.');
                s.push_str(frac);
            } else {
                s.push_str("0.");
                for _ in 0..(-point) {
                    s.push('0');
                }
                s.push_str(&self.digits);
            }
        }
        s
    }

    /// go's `big.Float.String()` (`Text('g', 10)`), used by cty to order
    /// sets of structured values.
    fn text_g10(&self) -> String {
        if self.is_zero() {
            return "0".into();
        }
        // Round to 10 significant digits, half to even on the decimal digits
        // (the binary value may differ in the last place; harmless here).
        let mut digits: Vec<u8> = self.digits.bytes().map(|c| c - b'0').collect();
        let mut exp = self.exp;
        if digits.len() > 10 {
            let cut = digits.len() - 10;
            let round_up = digits[10] > 5
                || (digits[10] == 5
                    && (digits[11..].iter().any(|&d| d != 0) || digits[9] % 2 == 1));
            digits.truncate(10);
            exp += cut as i64;
            if round_up {
                let mut i = digits.len();
                loop {
                    if i == 0 {
                        digits.insert(0, 1);
                        digits.pop();
                        exp += 1;
                        break;
                    }
                    i -= 1;
                    if digits[i] == 9 {
                        digits[i] = 0;
                    } else {
                        digits[i] += 1;
                        break;
                    }
                }
            }
            while digits.last() == Some(&0) {
                digits.pop();
                exp += 1;
            }
        }
        let text: String = digits.iter().map(|d| (b'0' + d) as char).collect();
        let sci_exp = exp + digits.len() as i64 - 1;
        let sign = if self.neg { "-" } else { "" };
        if !(-4..10).contains(&sci_exp) {
            let (first, rest) = text.split_at(1);
            let mant = if rest.is_empty() {
                first.to_string()
            } else {
                format!("{first}.{rest}")
            };
            let esign = if sci_exp < 0 { '-' } else { '+' };
            format!("{sign}{mant}e{esign}{:02}", sci_exp.abs())
        } else {
            let d = Dec {
                neg: self.neg,
                digits: text,
                exp,
            };
            d.text()
        }
    }
}

impl PartialOrd for Dec {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Dec {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        let sign = |d: &Dec| {
            if d.is_zero() {
                0
            } else if d.neg {
                -1
            } else {
                1
            }
        };
        let (sa, sb) = (sign(self), sign(other));
        if sa != sb {
            return sa.cmp(&sb);
        }
        if sa == 0 {
            return Ordering::Equal;
        }
        // Same sign: compare magnitudes.
        let top_a = self.exp + self.digits.len() as i64;
        let top_b = other.exp + other.digits.len() as i64;
        let mag = top_a.cmp(&top_b).then_with(|| {
            let n = self.digits.len().max(other.digits.len());
            let pad = |s: &str| format!("{s:0<n$}");
            pad(&self.digits).cmp(&pad(&other.digits))
        });
        if sa < 0 { mag.reverse() } else { mag }
    }
}

/// A cty type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ty {
    String,
    Number,
    Bool,
    /// cty.DynamicPseudoType (`any`).
    Any,
    List(Box<Ty>),
    Set(Box<Ty>),
    Map(Box<Ty>),
    /// Attribute types and the names of the optional attributes.
    Object(BTreeMap<String, Ty>, BTreeSet<String>),
    Tuple(Vec<Ty>),
}

impl Ty {
    pub fn object(attrs: BTreeMap<String, Ty>) -> Ty {
        Ty::Object(attrs, BTreeSet::new())
    }

    fn is_primitive(&self) -> bool {
        matches!(self, Ty::String | Ty::Number | Ty::Bool)
    }

    /// cty's `FriendlyNameForConstraint`.
    pub fn constraint_name(&self) -> String {
        let elem = |t: &Ty| match t {
            Ty::Any => "any single type".to_string(),
            t => t.constraint_name(),
        };
        match self {
            Ty::String => "string".into(),
            Ty::Number => "number".into(),
            Ty::Bool => "bool".into(),
            Ty::Any => "any type".into(),
            Ty::List(e) => format!("list of {}", elem(e)),
            Ty::Set(e) => format!("set of {}", elem(e)),
            Ty::Map(e) => format!("map of {}", elem(e)),
            Ty::Object(..) => "object".into(),
            Ty::Tuple(_) => "tuple".into(),
        }
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.constraint_name())
    }
}

/// A cty value (known; unknown values never reach the wire).
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Null(Ty),
    Bool(bool),
    Number(Dec),
    String(String),
    List(Ty, Vec<Val>),
    Set(Ty, Vec<Val>),
    Map(Ty, BTreeMap<String, Val>),
    Object(BTreeMap<String, Val>),
    Tuple(Vec<Val>),
}

impl Val {
    /// A string value, NFC-normalised as `cty.StringVal` does.
    pub fn string(s: &str) -> Val {
        Val::String(s.nfc().collect())
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Val::Null(_))
    }

    pub fn ty(&self) -> Ty {
        match self {
            Val::Null(t) => t.clone(),
            Val::Bool(_) => Ty::Bool,
            Val::Number(_) => Ty::Number,
            Val::String(_) => Ty::String,
            Val::List(e, _) => Ty::List(Box::new(e.clone())),
            Val::Set(e, _) => Ty::Set(Box::new(e.clone())),
            Val::Map(e, _) => Ty::Map(Box::new(e.clone())),
            Val::Object(m) => Ty::object(m.iter().map(|(k, v)| (k.clone(), v.ty())).collect()),
            Val::Tuple(v) => Ty::Tuple(v.iter().map(Val::ty).collect()),
        }
    }

    /// go-cty's msgpack encoding of the value with its own type
    /// (`msgpack.Marshal(v, v.Type())`).
    pub fn to_msgpack(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    fn encode(&self, out: &mut Vec<u8>) {
        use rmp::encode as e;
        // Writing to a Vec cannot fail; the results are io::Result only
        // because rmp's writers are generic.
        match self {
            Val::Null(_) => e::write_nil(out).unwrap_or_default(),
            Val::Bool(b) => e::write_bool(out, *b).unwrap_or_default(),
            Val::Number(d) => {
                if let Some(i) = d.to_i64() {
                    let _ = e::write_sint(out, i);
                } else if let Some(f) = d.to_f64_exact() {
                    let _ = e::write_f64(out, f);
                } else {
                    let _ = e::write_str(out, &d.text());
                }
            }
            Val::String(s) => {
                let _ = e::write_str(out, s);
            }
            Val::List(_, items) | Val::Set(_, items) | Val::Tuple(items) => {
                let _ = e::write_array_len(out, items.len() as u32);
                for v in items {
                    v.encode(out);
                }
            }
            Val::Map(_, m) | Val::Object(m) => {
                let _ = e::write_map_len(out, m.len() as u32);
                for (k, v) in m {
                    let _ = e::write_str(out, k);
                    v.encode(out);
                }
            }
        }
    }

    /// cty's set hash text, which orders sets of structured values.
    fn set_key(&self, out: &mut String) {
        match self {
            Val::Null(_) => out.push('~'),
            Val::Number(d) => out.push_str(&d.text_g10()),
            Val::Bool(b) => out.push(if *b { 'T' } else { 'F' }),
            Val::String(s) => out.push_str(&go_quote(s)),
            Val::Map(_, m) => {
                out.push('{');
                for (k, v) in m {
                    out.push_str(&go_quote(k));
                    out.push(':');
                    v.set_key(out);
                    out.push(';');
                }
                out.push('}');
            }
            Val::List(_, items) | Val::Set(_, items) => {
                out.push('[');
                for v in items {
                    v.set_key(out);
                    out.push(';');
                }
                out.push(']');
            }
            Val::Object(m) => {
                out.push('<');
                for v in m.values() {
                    v.set_key(out);
                    out.push(';');
                }
                out.push('>');
            }
            Val::Tuple(items) => {
                out.push('<');
                for v in items {
                    v.set_key(out);
                    out.push(';');
                }
                out.push('>');
            }
        }
    }
}

/// go's `%q` for the strings cty hashes (close enough for ordering: ASCII
/// is escaped as go does; other characters are kept).
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Builds a cty set: duplicates removed, elements in cty's iteration order.
pub fn make_set(ety: Ty, items: Vec<Val>) -> Val {
    let mut uniq: Vec<Val> = Vec::new();
    for v in items {
        if !uniq.contains(&v) {
            uniq.push(v);
        }
    }
    uniq.sort_by(set_order);
    Val::Set(ety, uniq)
}

fn set_order(a: &Val, b: &Val) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Val::Null(_), Val::Null(_)) => Ordering::Equal,
        (_, Val::Null(_)) => Ordering::Less,
        (Val::Null(_), _) => Ordering::Greater,
        (Val::String(x), Val::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Val::Number(x), Val::Number(y)) => x.cmp(y),
        (Val::Bool(x), Val::Bool(y)) => x.cmp(y),
        _ => {
            let (mut ka, mut kb) = (String::new(), String::new());
            a.set_key(&mut ka);
            b.set_key(&mut kb);
            ka.as_bytes().cmp(kb.as_bytes())
        }
    }
}

/// The type all of `types` can be converted to, as cty's unification finds
/// it for the cases configs produce: equal types, primitives that all
/// become strings, and objects or tuples whose members unify.
pub fn unify(types: &[Ty]) -> Option<Ty> {
    let first = types.first()?;
    if types.iter().all(|t| t == first) {
        return Some(first.clone());
    }
    if types.contains(&Ty::Any) {
        return Some(Ty::Any);
    }
    if types.iter().all(Ty::is_primitive) {
        // Mixed primitives unify to string when they all convert safely to
        // it (number and bool do); number and bool alone do not unify.
        return types.contains(&Ty::String).then_some(Ty::String);
    }
    if let Ty::Object(first_attrs, _) = first {
        let mut attrs = BTreeMap::new();
        for name in first_attrs.keys() {
            let mut members = Vec::new();
            for t in types {
                match t {
                    Ty::Object(a, _) if a.len() == first_attrs.len() => {
                        members.push(a.get(name)?.clone())
                    }
                    _ => return None,
                }
            }
            attrs.insert(name.clone(), unify(&members)?);
        }
        return Some(Ty::object(attrs));
    }
    None
}

/// cty's `convert.Convert(val, want)`: the converted value, or cty's
/// message saying why it cannot be.
pub fn convert(val: Val, want: &Ty) -> Result<Val, String> {
    if *want == Ty::Any {
        return Ok(val);
    }
    check_convertible(&val.ty(), want)?;
    convert_value(val, want)
}

/// Whether cty has a conversion from `got` to `want` (type level), with
/// cty's `MismatchMessage` when it has none.
fn check_convertible(got: &Ty, want: &Ty) -> Result<(), String> {
    if got == want || *want == Ty::Any || *got == Ty::Any {
        return Ok(());
    }
    let required = || Err(format!("{} required", want.constraint_name()));
    match (got, want) {
        (Ty::Number | Ty::Bool, Ty::String) => Ok(()),
        (Ty::String, Ty::Number | Ty::Bool) => Ok(()),
        (Ty::Object(ga, _), Ty::Object(wa, wopt)) => {
            let mut missing: Vec<&String> = wa
                .keys()
                .filter(|k| !ga.contains_key(*k) && !wopt.contains(*k))
                .collect();
            missing.sort();
            match missing.len() {
                0 => {}
                1 => return Err(format!("attribute {:?} is required", missing[0])),
                2 => {
                    return Err(format!(
                        "attributes {:?} and {:?} are required",
                        missing[0], missing[1]
                    ));
                }
                _ => {
                    let (last, rest) = missing.split_last().unwrap_or((&missing[0], &[]));
                    let head: Vec<String> = rest.iter().map(|m| format!("{m:?}")).collect();
                    return Err(format!(
                        "attributes {}, and {:?} are required",
                        head.join(", "),
                        last
                    ));
                }
            }
            for (name, wt) in wa {
                if let Some(gt) = ga.get(name) {
                    check_convertible(gt, wt).map_err(|m| format!("attribute {name:?}: {m}"))?;
                }
            }
            Ok(())
        }
        (Ty::Tuple(gts), Ty::List(et) | Ty::Set(et)) => {
            if **et == Ty::Any {
                if gts.is_empty() || unify(gts).is_some() {
                    return Ok(());
                }
                let what = if matches!(want, Ty::List(_)) {
                    "list"
                } else {
                    "set"
                };
                return Err(format!("all {what} elements must have the same type"));
            }
            for (i, gt) in gts.iter().enumerate() {
                check_convertible(gt, et).map_err(|m| format!("element {i}: {m}"))?;
            }
            Ok(())
        }
        (Ty::Object(ga, _), Ty::Map(et)) => {
            if **et == Ty::Any {
                let types: Vec<Ty> = ga.values().cloned().collect();
                if types.is_empty() || unify(&types).is_some() {
                    return Ok(());
                }
                return Err("all map elements must have the same type".into());
            }
            for (name, gt) in ga {
                check_convertible(gt, et).map_err(|m| format!("element {name:?}: {m}"))?;
            }
            Ok(())
        }
        (Ty::List(ge) | Ty::Set(ge), Ty::List(we) | Ty::Set(we)) => {
            let noun = if matches!(want, Ty::List(_)) {
                "list"
            } else {
                "set"
            };
            check_convertible(ge, we).map_err(|m| format!("incorrect {noun} element type: {m}"))
        }
        (Ty::Map(ge), Ty::Map(we)) => {
            check_convertible(ge, we).map_err(|m| format!("incorrect map element type: {m}"))
        }
        (Ty::Tuple(gts), Ty::Tuple(wts)) if gts.len() == wts.len() => {
            for (i, (g, w)) in gts.iter().zip(wts).enumerate() {
                check_convertible(g, w).map_err(|m| format!("element {i}: {m}"))?;
            }
            Ok(())
        }
        _ => required(),
    }
}

/// Converts a value whose type is known to be convertible; only value-level
/// failures (a string that is not a number, ...) remain.
fn convert_value(val: Val, want: &Ty) -> Result<Val, String> {
    if *want == Ty::Any {
        return Ok(val);
    }
    if let Val::Null(_) = val {
        return Ok(Val::Null(want.clone()));
    }
    match (val, want) {
        (Val::String(s), Ty::String) => Ok(Val::String(s)),
        (Val::Number(d), Ty::String) => Ok(Val::String(d.text())),
        (Val::Bool(b), Ty::String) => Ok(Val::String(if b { "true" } else { "false" }.into())),
        (Val::Number(d), Ty::Number) => Ok(Val::Number(d)),
        (Val::String(s), Ty::Number) => Dec::parse(&s)
            .map(Val::Number)
            .ok_or_else(|| "a number is required".to_string()),
        (Val::Bool(b), Ty::Bool) => Ok(Val::Bool(b)),
        (Val::String(s), Ty::Bool) => match s.as_str() {
            "true" | "1" => Ok(Val::Bool(true)),
            "false" | "0" => Ok(Val::Bool(false)),
            other => Err(match other.to_lowercase().as_str() {
                "true" => {
                    "a bool is required; to convert from string, use lowercase \"true\"".into()
                }
                "false" => {
                    "a bool is required; to convert from string, use lowercase \"false\"".into()
                }
                _ => "a bool is required".into(),
            }),
        },
        (
            Val::List(_, items) | Val::Set(_, items) | Val::Tuple(items),
            Ty::List(et) | Ty::Set(et),
        ) => {
            let ety = if **et == Ty::Any {
                let types: Vec<Ty> = items.iter().map(Val::ty).collect();
                if types.is_empty() {
                    Ty::Any
                } else {
                    unify(&types).ok_or("all elements must have the same type")?
                }
            } else {
                (**et).clone()
            };
            let items = items
                .into_iter()
                .map(|v| convert_value(v, &ety))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(match want {
                Ty::Set(_) => make_set(ety, items),
                _ => Val::List(ety, items),
            })
        }
        (Val::Map(_, m) | Val::Object(m), Ty::Map(et)) => {
            let ety = if **et == Ty::Any {
                let types: Vec<Ty> = m.values().map(Val::ty).collect();
                if types.is_empty() {
                    Ty::Any
                } else {
                    unify(&types).ok_or("all map elements must have the same type")?
                }
            } else {
                (**et).clone()
            };
            let m = m
                .into_iter()
                .map(|(k, v)| convert_value(v, &ety).map(|v| (k, v)))
                .collect::<Result<BTreeMap<_, _>, _>>()?;
            Ok(Val::Map(ety, m))
        }
        (Val::Object(mut m), Ty::Object(wa, _)) => {
            let mut out = BTreeMap::new();
            for (name, wt) in wa {
                let v = m.remove(name).unwrap_or(Val::Null(wt.clone()));
                out.insert(name.clone(), convert_value(v, wt)?);
            }
            Ok(Val::Object(out))
        }
        (Val::Tuple(items), Ty::Tuple(wts)) if items.len() == wts.len() => Ok(Val::Tuple(
            items
                .into_iter()
                .zip(wts)
                .map(|(v, t)| convert_value(v, t))
                .collect::<Result<_, _>>()?,
        )),
        (val, want) => Err(format!(
            "{} required (got {})",
            want.constraint_name(),
            val.ty().constraint_name()
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hex(v: &Val) -> String {
        v.to_msgpack().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn num(s: &str) -> Val {
        Val::Number(Dec::parse(s).unwrap())
    }

    #[test]
    fn numbers_encode_like_go_cty() {
        // /work/shared/vectors/cty-msgpack.txt, from go-cty 1.12.1.
        assert_eq!(hex(&num("5")), "05");
        assert_eq!(hex(&num("-1")), "ff");
        assert_eq!(hex(&num("200")), "ccc8");
        assert_eq!(hex(&num("-200")), "d1ff38");
        assert_eq!(hex(&num("70000")), "ce00011170");
        assert_eq!(hex(&num("1.5")), "cb3ff8000000000000");
        assert_eq!(hex(&num("0.1")), "a3302e31");
        assert_eq!(
            hex(&num("1e30")),
            "bf31303030303030303030303030303030303030303030303030303030303030"
        );
        assert_eq!(
            hex(&num("123456789012345678901234567890")),
            "be313233343536373839303132333435363738393031323334353637383930"
        );
        assert_eq!(hex(&num("5.0")), "05");
        assert_eq!(hex(&num("0")), "00");
    }

    #[test]
    fn decimal_text_and_parse() {
        assert_eq!(Dec::parse("007.50").unwrap().text(), "7.5");
        assert_eq!(Dec::parse("-0.001").unwrap().text(), "-0.001");
        assert_eq!(Dec::parse("12e-1").unwrap().text(), "1.2");
        assert_eq!(Dec::from_f64(0.1).unwrap().text(), "0.1");
        assert!(Dec::parse("abc").is_none());
        assert!(Dec::parse("1e").is_none());
        assert!(Dec::parse("").is_none());
        assert!(Dec::parse(".").is_none());
        assert!(Dec::parse("1e99999999").is_none());
        assert!(Dec::parse("-3").unwrap() < Dec::parse("2").unwrap());
        assert!(Dec::parse("10").unwrap() > Dec::parse("9.99").unwrap());
        assert_eq!(
            Dec::parse("12345678901").unwrap().text_g10(),
            "1.23456789e+10"
        );
        assert_eq!(Dec::parse("1.5").unwrap().text_g10(), "1.5");
        assert_eq!(Dec::parse("0.00001").unwrap().text_g10(), "1e-05");
    }

    #[test]
    fn other_primitives_and_collections() {
        // Vectors: string hi, list(string), map(string), tuple, object.
        assert_eq!(hex(&Val::string("hi")), "a26869");
        assert_eq!(hex(&Val::Bool(true)), "c3");
        assert_eq!(hex(&Val::Null(Ty::String)), "c0");
        let list = Val::List(Ty::String, vec![Val::string("a"), Val::string("b")]);
        assert_eq!(hex(&list), "92a161a162");
        let map = Val::Map(
            Ty::String,
            [
                ("z".to_string(), Val::string("1")),
                ("a".to_string(), Val::string("2")),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(hex(&map), "82a161a132a17aa131");
        assert_eq!(
            hex(&Val::Tuple(vec![Val::string("a"), num("1")])),
            "92a16101"
        );
    }

    #[test]
    fn conversions_follow_cty() {
        assert_eq!(convert(Val::string("42"), &Ty::Number).unwrap(), num("42"));
        assert_eq!(
            convert(num("1.5"), &Ty::String).unwrap(),
            Val::string("1.5")
        );
        assert_eq!(
            convert(Val::string("1"), &Ty::Bool).unwrap(),
            Val::Bool(true)
        );
        assert_eq!(
            convert(Val::Bool(false), &Ty::String).unwrap(),
            Val::string("false")
        );
        assert_eq!(
            convert(Val::string("x"), &Ty::Number).unwrap_err(),
            "a number is required"
        );
        assert_eq!(
            convert(Val::string("True"), &Ty::Bool).unwrap_err(),
            "a bool is required; to convert from string, use lowercase \"true\""
        );
        assert_eq!(convert(num("1"), &Ty::Bool).unwrap_err(), "bool required");
        let tuple = Val::Tuple(vec![Val::string("a"), Val::Bool(true)]);
        assert_eq!(
            convert(tuple.clone(), &Ty::List(Box::new(Ty::Number))).unwrap_err(),
            "element 1: number required"
        );
        assert_eq!(
            convert(tuple, &Ty::List(Box::new(Ty::Any))).unwrap(),
            Val::List(Ty::String, vec![Val::string("a"), Val::string("true")])
        );
        let set = convert(
            Val::Tuple(vec![Val::string("b"), Val::string("a"), Val::string("b")]),
            &Ty::Set(Box::new(Ty::String)),
        )
        .unwrap();
        assert_eq!(hex(&set), "92a161a162");
        let want =
            Ty::object([("a".to_string(), Ty::String), ("b".to_string(), Ty::Number)].into());
        let obj = Val::Object([("a".to_string(), num("1"))].into());
        assert_eq!(
            convert(obj, &want).unwrap_err(),
            "attribute \"b\" is required"
        );
    }
}
