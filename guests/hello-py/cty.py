"""Decode Nomad's cty-msgpack configuration bytes, with the rules of the Rust SDK.

Nomad sends a driver its agent config and each task's ``config { }`` block as
a cty value encoded by go-cty's ``msgpack.Marshal``. The bytes are plain
msgpack (read here with the ``msgpack`` package's pure-Python unpacker) with a
few cty conventions on top, handled the way ``guests/sdk/src/cty.rs`` handles
them, so the Python hello guest accepts and refuses exactly what the Rust one
does:

- every declared attribute is sent, ``nil`` when unset: a nil field is absent;
- a number may arrive as an int, a float, or a string with its decimal text
  (``"0.1"``, ``"1e30"``); integer fields accept all three, checked to be whole
  and in range;
- a value typed ``any`` may be wrapped as ``[bin(type JSON), value]``
  (DynamicPseudoType), unwrapped when recognised;
- an unknown value (ext type 0) is an error, as is any other ext type;
- empty input is an empty configuration.

Errors carry the field: ``field "sleep": expected a whole number (u32), found
number 1.5``.
"""

import re

import msgpack

# The msgpack ext type cty uses for an unknown (not yet computed) value.
EXT_UNKNOWN = 0

# How deeply containers may nest before the input is refused (as cty.rs).
MAX_NESTING = 128

# Longest piece of a string quoted back in an error message, in characters.
QUOTE_LIMIT = 40

_DECIMAL = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?")

_PRIMITIVE_TYPES = (b'"string"', b'"number"', b'"bool"', b'"dynamic"')
_COMPOUND_TYPES = (
    b'["list",',
    b'["set",',
    b'["map",',
    b'["object",',
    b'["tuple",',
    b'["capsule",',
)


class ConfigError(Exception):
    """Why config bytes could not be decoded, and at which field."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self):
        if self.field:
            return f'field "{self.field}": {self.message}'
        return self.message


def rust_debug(text):
    """A string quoted as Rust's ``{:?}`` does (the Rust guest's error style)."""
    out = ['"']
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\0":
            out.append("\\0")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def quote(text):
    """Debug-quotes ``text``, cut to QUOTE_LIMIT characters."""
    if len(text) > QUOTE_LIMIT:
        return rust_debug(text[:QUOTE_LIMIT]) + "..."
    return rust_debug(text)


def describe(value):
    """How a value found in the input is named in error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {quote(value)}"
    if isinstance(value, bytes):
        return f"binary data ({len(value)} bytes)"
    if isinstance(value, list):
        return f"a list of {len(value)} elements"
    if isinstance(value, dict):
        return f"a map of {len(value)} entries"
    if isinstance(value, msgpack.ExtType):
        if value.code == EXT_UNKNOWN:
            return "an unknown value"
        return f"msgpack extension type {value.code}"
    if isinstance(value, msgpack.Timestamp):
        return "msgpack extension type -1"
    return type(value).__name__


def _nesting_ok(data):
    """Whether no container in ``data`` nests deeper than MAX_NESTING.

    Checked on the bytes before unpacking: the pure-Python unpacker recurses
    once per level, and a guest's stack is small.
    """
    # Remaining child counts of the open containers, innermost last.
    open_counts = []
    pos = 0
    end = len(data)

    def fixed(n):
        return pos + 1 + n

    def length(size):
        return int.from_bytes(data[pos + 1 : pos + 1 + size], "big")

    while pos < end:
        b = data[pos]
        children = 0
        if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):
            nxt = pos + 1
        elif 0x80 <= b <= 0x8F:
            children, nxt = 2 * (b & 0x0F), pos + 1
        elif 0x90 <= b <= 0x9F:
            children, nxt = b & 0x0F, pos + 1
        elif 0xA0 <= b <= 0xBF:
            nxt = pos + 1 + (b & 0x1F)
        elif b in (0xC4, 0xD9):
            nxt = fixed(1) + length(1)
        elif b in (0xC5, 0xDA):
            nxt = fixed(2) + length(2)
        elif b in (0xC6, 0xDB):
            nxt = fixed(4) + length(4)
        elif b == 0xC7:
            nxt = fixed(2) + length(1)
        elif b == 0xC8:
            nxt = fixed(3) + length(2)
        elif b == 0xC9:
            nxt = fixed(5) + length(4)
        elif b in (0xCA, 0xCE, 0xD2):
            nxt = fixed(4)
        elif b in (0xCB, 0xCF, 0xD3):
            nxt = fixed(8)
        elif b in (0xCC, 0xD0):
            nxt = fixed(1)
        elif b in (0xCD, 0xD1):
            nxt = fixed(2)
        elif 0xD4 <= b <= 0xD8:
            nxt = fixed(1 + (1 << (b - 0xD4)))
        elif b == 0xDC:
            children, nxt = length(2), fixed(2)
        elif b == 0xDD:
            children, nxt = length(4), fixed(4)
        elif b == 0xDE:
            children, nxt = 2 * length(2), fixed(2)
        elif b == 0xDF:
            children, nxt = 2 * length(4), fixed(4)
        else:
            # 0xC1 is never used; the unpacker reports it.
            return True
        pos = nxt
        # This value fills one slot of the innermost open container.
        while open_counts and open_counts[-1] == 0:
            open_counts.pop()
        if open_counts:
            open_counts[-1] -= 1
        if children:
            open_counts.append(children)
            if len(open_counts) > MAX_NESTING:
                return False
    return True


def decode_value(data):
    """Decodes cty-msgpack bytes into plain Python values, without interpreting them."""
    data = bytes(data)
    if not data:
        return {}
    if not _nesting_ok(data):
        raise ConfigError(f"invalid msgpack: nested deeper than {MAX_NESTING} levels")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            use_list=True,
            timestamp=0,
        )
    except msgpack.ExtraData as e:
        raise ConfigError(
            f"invalid msgpack: {len(e.extra)} trailing bytes after the value"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError("invalid msgpack: a string is not valid UTF-8") from None
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as e:
        raise ConfigError(f"invalid msgpack: {e}") from None


def _is_type_descriptor(raw):
    return raw in _PRIMITIVE_TYPES or (
        raw.endswith(b"]") and any(raw.startswith(p) for p in _COMPOUND_TYPES)
    )


def resolve(value):
    """Strips cty's DynamicPseudoType wrapper and refuses ext values."""
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], bytes)
        and _is_type_descriptor(value[0])
    ):
        value = value[1]
    if isinstance(value, msgpack.ExtType):
        if value.code == EXT_UNKNOWN:
            raise ConfigError("value is unknown (not yet computed)")
        raise ConfigError(f"unsupported msgpack extension type {value.code}")
    if isinstance(value, msgpack.Timestamp):
        # msgpack's own ext type -1, which the unpacker decodes itself.
        raise ConfigError("unsupported msgpack extension type -1")
    return value


def attributes(value):
    """The top-level object as a dict of its non-null attributes."""
    value = resolve(value)
    if not isinstance(value, dict):
        raise ConfigError(f"expected a map of attributes, found {describe(value)}")
    out = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise ConfigError(f"expected a string key, found {describe(key)}")
        if resolve_nil(item):
            continue
        out[key] = item
    return out


def resolve_nil(value):
    """Whether ``value`` is nil, also inside the DynamicPseudoType wrapper."""
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], bytes)
        and _is_type_descriptor(value[0])
    ):
        value = value[1]
    return value is None


def string(value, field):
    """A string field."""
    try:
        value = resolve(value)
    except ConfigError as e:
        raise ConfigError(e.message, field) from None
    if not isinstance(value, str):
        raise ConfigError(f"expected a string, found {describe(value)}", field)
    return value


def _whole_from_text(text):
    """The whole number in decimal text; raises ValueError naming why not."""
    m = _DECIMAL.fullmatch(text)
    if m is None:
        raise ValueError("not a number")
    sign, int_digits, frac_digits, exponent = m.groups()
    frac_digits = frac_digits or ""
    if not int_digits and not frac_digits:
        raise ValueError("not a number")
    digits = int_digits + frac_digits
    # Where the decimal point falls, counted in digits from the left.
    point = len(int_digits) + int(exponent or "0")
    kept, dropped = digits[: max(point, 0)], digits[max(point, 0) :]
    if dropped.strip("0"):
        raise ValueError("fractional")
    kept = kept.lstrip("0")
    if len(kept) > 40:
        # Beyond every target's range (and past CPython's int-from-text limit).
        raise OverflowError
    magnitude = int(kept or "0")
    if magnitude and point - len(digits) > 40:
        # Beyond every target's range; do not build a huge int.
        raise OverflowError
    if magnitude and point > len(digits):
        magnitude *= 10 ** (point - len(digits))
    return -magnitude if sign == "-" else magnitude


def integer(value, field, target, lo, hi):
    """An integer field of Rust type ``target`` (range lo..=hi), as cty.rs reads it.

    Accepts an int, a whole float, or decimal text.
    """
    try:
        value = resolve(value)
    except ConfigError as e:
        raise ConfigError(e.message, field) from None
    out_of_range = ConfigError(
        f"expected a whole number in the range of {target} ({lo} to {hi}), found {describe(value)}",
        field,
    )
    if isinstance(value, bool):
        n = None
    elif isinstance(value, int):
        n = value
    elif isinstance(value, float):
        if value != value:  # NaN
            raise ConfigError(f"expected a whole number ({target}), found {describe(value)}", field)
        if value in (float("inf"), float("-inf")):
            raise out_of_range
        if not value.is_integer():
            raise ConfigError(f"expected a whole number ({target}), found {describe(value)}", field)
        n = int(value)
    elif isinstance(value, str):
        try:
            n = _whole_from_text(value)
        except OverflowError:
            raise out_of_range from None
        except ValueError as e:
            kind = "a whole number" if str(e) == "fractional" else "a number"
            raise ConfigError(
                f"expected {kind} ({target}), found {describe(value)}", field
            ) from None
    else:
        n = None
    if n is None:
        raise ConfigError(f"expected a number ({target}), found {describe(value)}", field)
    if not lo <= n <= hi:
        raise out_of_range
    return n
