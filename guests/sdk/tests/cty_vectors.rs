//! Decoding the cty-msgpack bytes Nomad's own Go libraries produce.
//!
//! The hex strings are copied from `shared/vectors/cty-msgpack.txt` (go-cty v1.12.1 +
//! vmihailenco/msgpack v4.3.12, and Nomad's JSON -> HCL JSON -> hcldec -> msgpack
//! pipeline) so this test does not depend on that file being present.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use nomad_driver_sdk::cty::{self, Error};
use rmpv::Value;
use serde::Deserialize;

fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length: {text}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn decode<T: serde::de::DeserializeOwned>(hex_text: &str) -> T {
    match cty::from_slice(&hex(hex_text)) {
        Ok(v) => v,
        Err(e) => panic!("decoding {hex_text}: {e}"),
    }
}

fn decode_err<T: serde::de::DeserializeOwned + std::fmt::Debug>(bytes: &[u8]) -> Error {
    match cty::from_slice::<T>(bytes) {
        Ok(v) => panic!("expected an error, decoded {v:?}"),
        Err(e) => e,
    }
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).unwrap();
    out
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------
// Primitive vectors

#[test]
fn integers_in_every_compact_form() {
    assert_eq!(decode::<i64>("05"), 5);
    assert_eq!(decode::<u8>("05"), 5);
    assert_eq!(decode::<i64>("ff"), -1);
    assert_eq!(decode::<i8>("ff"), -1);
    assert_eq!(decode::<u8>("ccc8"), 200);
    assert_eq!(decode::<i16>("d1ff38"), -200);
    assert_eq!(decode::<i32>("d1ff38"), -200);
    assert_eq!(decode::<u32>("ce00011170"), 70000);
    assert_eq!(decode::<f64>("ce00011170"), 70000.0);
    assert_eq!(
        decode::<serde_json::Value>("d1ff38"),
        serde_json::json!(-200)
    );
}

#[test]
fn floats_and_numbers_sent_as_text() {
    assert_eq!(decode::<f64>("cb3ff8000000000000"), 1.5);
    assert_eq!(decode::<f32>("cb3ff8000000000000"), 1.5);
    assert_eq!(decode::<f64>("a3302e31"), 0.1);
    assert_eq!(decode::<f32>("a3302e31"), 0.1);
    let big = "bf31303030303030303030303030303030303030303030303030303030303030";
    assert_eq!(decode::<f64>(big), 1e30);
    assert_eq!(decode::<u128>(big), 10u128.pow(30));
    assert_eq!(decode::<i128>(big), 10i128.pow(30));
    let digits = "be313233343536373839303132333435363738393031323334353637383930";
    assert_eq!(decode::<u128>(digits), 123456789012345678901234567890);
    assert_eq!(decode::<f64>(digits), 123456789012345678901234567890.0);
    // deserialize_any keeps the text: the caller did not ask for a number.
    assert_eq!(
        decode::<serde_json::Value>("a3302e31"),
        serde_json::json!("0.1")
    );
    assert_eq!(decode::<String>("a3302e31"), "0.1");
}

#[test]
fn bool_string_and_null() {
    assert!(decode::<bool>("c3"));
    assert_eq!(decode::<String>("a26869"), "hi");
    assert_eq!(decode::<Option<String>>("c0"), None);
    assert_eq!(decode::<Option<serde_json::Value>>("c0"), None);
    assert_eq!(decode::<serde_json::Value>("c0"), serde_json::Value::Null);
    assert_eq!(decode::<()>("c0"), ());
}

#[test]
fn collections() {
    assert_eq!(decode::<Vec<String>>("92a161a162"), ["a", "b"]);
    assert_eq!(
        decode::<std::collections::BTreeSet<String>>("92a161a162").len(),
        2
    );
    assert!(decode::<Vec<String>>("90").is_empty());
    let m: BTreeMap<String, String> = decode("82a161a132a17aa131");
    assert_eq!(
        m,
        BTreeMap::from([("a".into(), "2".into()), ("z".into(), "1".into())])
    );
    // A map(number) whose numbers came as text decodes into integers.
    let m: BTreeMap<String, u16> = decode("82a161a132a17aa131");
    assert_eq!(m, BTreeMap::from([("a".into(), 2), ("z".into(), 1)]));
    assert_eq!(decode::<(String, i32)>("92a16101"), ("a".to_owned(), 1));
    assert_eq!(
        decode::<serde_json::Value>("92a16101"),
        serde_json::json!(["a", 1])
    );
}

#[test]
fn object_with_null_attribute() {
    #[derive(Debug, Deserialize, PartialEq)]
    struct Obj {
        args: Vec<String>,
        command: String,
        port: Option<u16>,
    }
    let o: Obj = decode("83a46172677391a26869a7636f6d6d616e64a92f62696e2f6563686fa4706f7274c0");
    assert_eq!(
        o,
        Obj {
            args: vec!["hi".into()],
            command: "/bin/echo".into(),
            port: None
        }
    );

    // As a plain map the null stays visible.
    let m: BTreeMap<String, serde_json::Value> = decode("82a16ec0a17891a161");
    assert_eq!(m["n"], serde_json::Value::Null);
    assert_eq!(m["x"], serde_json::json!(["a"]));
}

#[test]
fn dynamic_pseudo_type_wrapper_is_unwrapped() {
    let wrapped = "92c40822737472696e6722a178";
    assert_eq!(decode::<String>(wrapped), "x");
    assert_eq!(decode::<Option<String>>(wrapped), Some("x".to_owned()));
    assert_eq!(decode::<serde_json::Value>(wrapped), serde_json::json!("x"));

    // A list wrapped as dynamic is unwrapped for a list target too...
    let list = Value::Array(vec![
        Value::Binary(b"[\"list\",\"string\"]".to_vec()),
        Value::Array(vec!["a".into(), "b".into()]),
    ]);
    assert_eq!(
        cty::from_slice::<Vec<String>>(&encode(&list)).unwrap(),
        ["a", "b"]
    );
    // ...but a primitive wrapper is left alone when a list is asked for.
    let err = cty::from_slice::<Vec<String>>(&hex(wrapped)).unwrap_err();
    assert_eq!(err.field(), Some("[0]"));
    assert_eq!(
        err.message(),
        "expected a string, found binary data (8 bytes)"
    );

    // A bin that is not a type descriptor is not a wrapper.
    let not_wrapper = Value::Array(vec![Value::Binary(b"xy".to_vec()), "x".into()]);
    let err = cty::from_slice::<String>(&encode(&not_wrapper)).unwrap_err();
    assert_eq!(
        err.message(),
        "expected a string, found a list of 2 elements"
    );
}

#[test]
fn unknown_value_is_an_error() {
    let err = cty::from_slice::<String>(&hex("d40000")).unwrap_err();
    assert_eq!(err.field(), None);
    assert_eq!(err.message(), "value is unknown (not yet computed)");
    let err = cty::from_slice::<Option<String>>(&hex("d40000")).unwrap_err();
    assert_eq!(err.message(), "value is unknown (not yet computed)");
}

// ---------------------------------------------------------------------------------------
// Nomad pipeline vectors: a task config schema with every kind of attribute

#[derive(Debug, Deserialize, PartialEq)]
struct Mount {
    ro: bool,
    source: String,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Opts {
    level: String,
}

#[derive(Debug, Deserialize, PartialEq)]
struct TaskConfig {
    args: Option<Vec<String>>,
    command: String,
    count: Option<f64>,
    #[serde(default)]
    debug: bool,
    env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    extra: serde_json::Value,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    mount: Vec<Mount>,
    opts: Option<Opts>,
}

/// The same schema with `count` as an integer and `extra` kept as raw msgpack.
#[derive(Debug, Deserialize, PartialEq)]
struct TaskConfigInt {
    count: Option<u16>,
    #[serde(default = "default_command")]
    command: String,
    extra: Option<String>,
}

fn default_command() -> String {
    "/bin/true".to_owned()
}

const MINIMAL: &str = "89a461726773c0a7636f6d6d616e64a92f62696e2f6563686fa5636f756e74c0a56465627567c2a3656e76c0a56578747261c0a66c6162656c73c0a56d6f756e7490a46f707473c0";
const FULL: &str = "89a46172677392a161a162a7636f6d6d616e64ad2f6c6f63616c2f72756e2e7368a5636f756e74a3302e31a56465627567c3a3656e7682a141a131a142a132a5657874726193a17801c3a66c6162656c7381a16ba176a56d6f756e749182a2726fc3a6736f75726365a22f61a46f70747381a56c6576656ca26869";
const NUMBER_3: &str = "89a461726773c0a7636f6d6d616e64a178a5636f756e7403a56465627567c2a3656e76c0a56578747261c0a66c6162656c73c0a56d6f756e7490a46f707473c0";
const NUMBER_42: &str = "89a461726773c0a7636f6d6d616e64a178a5636f756e742aa56465627567c2a3656e76c0a56578747261c0a66c6162656c73c0a56d6f756e7490a46f707473c0";
const EXTRA_OBJECT: &str = "89a461726773c0a7636f6d6d616e64a178a5636f756e74c0a56465627567c2a3656e76c0a5657874726182a161a173a17a01a66c6162656c73c0a56d6f756e7490a46f707473c0";
const EMPTY_OBJECT: &str = "80";

#[test]
fn minimal_config_leaves_everything_unset() {
    let c: TaskConfig = decode(MINIMAL);
    assert_eq!(
        c,
        TaskConfig {
            args: None,
            command: "/bin/echo".into(),
            count: None,
            debug: false,
            env: None,
            extra: serde_json::Value::Null,
            labels: BTreeMap::new(),
            mount: vec![],
            opts: None,
        }
    );
}

#[test]
fn full_config_decodes_every_attribute() {
    let c: TaskConfig = decode(FULL);
    assert_eq!(
        c,
        TaskConfig {
            args: Some(vec!["a".into(), "b".into()]),
            command: "/local/run.sh".into(),
            count: Some(0.1),
            debug: true,
            env: Some(BTreeMap::from([
                ("A".into(), "1".into()),
                ("B".into(), "2".into())
            ])),
            extra: serde_json::json!(["x", 1, true]),
            labels: BTreeMap::from([("k".into(), "v".into())]),
            mount: vec![Mount {
                ro: true,
                source: "/a".into()
            }],
            opts: Some(Opts { level: "hi".into() }),
        }
    );
}

#[test]
fn full_config_into_generic_values() {
    let v: serde_json::Value = decode(FULL);
    assert_eq!(v["count"], serde_json::json!("0.1"));
    assert_eq!(v["mount"][0]["source"], serde_json::json!("/a"));
    let raw = cty::decode_value(&hex(FULL)).unwrap();
    assert_eq!(raw.as_map().unwrap().len(), 9);
}

#[test]
fn number_attribute_in_each_form() {
    assert_eq!(decode::<TaskConfig>(NUMBER_3).count, Some(3.0));
    assert_eq!(decode::<TaskConfig>(NUMBER_42).count, Some(42.0));
    assert_eq!(decode::<TaskConfigInt>(NUMBER_3).count, Some(3));
    assert_eq!(decode::<TaskConfigInt>(NUMBER_42).count, Some(42));
    assert_eq!(decode::<TaskConfigInt>(MINIMAL).count, None);

    // The same attribute sent as text, as cty does for numbers with no exact binary form.
    let as_text = map(vec![("count", "42".into())]);
    assert_eq!(
        cty::from_slice::<TaskConfigInt>(&encode(&as_text))
            .unwrap()
            .count,
        Some(42)
    );
    let as_float = map(vec![("count", Value::F64(42.0))]);
    assert_eq!(
        cty::from_slice::<TaskConfigInt>(&encode(&as_float))
            .unwrap()
            .count,
        Some(42)
    );
}

#[test]
fn extra_object_into_json_value() {
    let c: TaskConfig = decode(EXTRA_OBJECT);
    assert_eq!(c.extra, serde_json::json!({"a": "s", "z": 1}));
}

#[test]
fn empty_config_and_defaults() {
    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(default)]
    struct AllDefault {
        name: String,
        port: u16,
        tags: Vec<String>,
    }
    assert_eq!(decode::<AllDefault>(EMPTY_OBJECT), AllDefault::default());
    assert_eq!(
        cty::from_slice::<AllDefault>(&[]).unwrap(),
        AllDefault::default()
    );
    assert_eq!(cty::decode_value(&[]).unwrap(), Value::Map(vec![]));

    // Null command with a default function: the default applies.
    let c: TaskConfigInt = decode(MINIMAL.replace("a92f62696e2f6563686f", "c0").as_str());
    assert_eq!(c.command, "/bin/true");
}

#[test]
fn enums_by_name_and_by_single_set_entry() {
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Level {
        Debug,
        Info,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Network {
        Host,
        Bridge { mode: String },
        Port(u16),
    }
    assert_eq!(decode::<Level>("a4696e666f"), Level::Info);
    assert_eq!(
        cty::from_slice::<Level>(&encode(&"debug".into())).unwrap(),
        Level::Debug
    );
    assert_eq!(
        cty::from_slice::<Network>(&encode(&"host".into())).unwrap(),
        Network::Host
    );
    // An object of optional blocks where exactly one is set selects that variant.
    let choice = map(vec![
        ("bridge", map(vec![("mode", "nat".into())])),
        ("port", Value::Nil),
    ]);
    assert_eq!(
        cty::from_slice::<Network>(&encode(&choice)).unwrap(),
        Network::Bridge { mode: "nat".into() }
    );
    let port = map(vec![("port", "8080".into())]);
    assert_eq!(
        cty::from_slice::<Network>(&encode(&port)).unwrap(),
        Network::Port(8080)
    );

    let err = cty::from_slice::<Level>(&encode(&"loud".into())).unwrap_err();
    assert_eq!(
        err.message(),
        "unknown variant \"loud\", expected one of `debug`, `info`"
    );
    let bad_port = map(vec![("net", map(vec![("port", "1.5".into())]))]);
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct WithNet {
        net: Network,
    }
    let err = cty::from_slice::<WithNet>(&encode(&bad_port)).unwrap_err();
    assert_eq!(err.field(), Some("net.port"));
    let two = map(vec![
        ("host", Value::Nil),
        ("port", 1.into()),
        ("bridge", map(vec![])),
    ]);
    assert!(cty::from_slice::<Network>(&encode(&two)).is_err());
}

#[test]
fn byte_buffers_accept_bin_and_str() {
    struct Bytes(Vec<u8>);
    impl<'de> Deserialize<'de> for Bytes {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Bytes;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
            }
            d.deserialize_bytes(V)
        }
    }
    let bin = encode(&Value::Binary(vec![0, 1, 255]));
    assert_eq!(cty::from_slice::<Bytes>(&bin).unwrap().0, [0, 1, 255]);
    assert_eq!(cty::from_slice::<Bytes>(&hex("a26869")).unwrap().0, b"hi");
    // A string field does not accept bin.
    let err = cty::from_slice::<String>(&bin).unwrap_err();
    assert_eq!(
        err.message(),
        "expected a string, found binary data (3 bytes)"
    );
}

#[test]
fn round_trip_through_rmpv_encoder_uses_wide_forms() {
    // Values big enough to need str16, array16, map16, uint64 and int64 forms.
    let long = "s".repeat(300);
    let many: Vec<Value> = (0..20).map(Value::from).collect();
    let mut env = Vec::new();
    for i in 0..20 {
        env.push((
            Value::from(format!("K{i:02}")),
            Value::from(format!("v{i}")),
        ));
    }
    let value = map(vec![
        ("big", Value::from(u64::MAX)),
        ("env", Value::Map(env)),
        ("long", Value::from(long.as_str())),
        ("many", Value::Array(many)),
        ("neg", Value::from(i64::MIN)),
        ("nothing", Value::Nil),
    ]);
    #[derive(Debug, Deserialize)]
    struct Wide {
        big: u64,
        env: BTreeMap<String, String>,
        long: String,
        many: Vec<i32>,
        neg: i64,
        #[serde(default = "seven")]
        nothing: u8,
    }
    fn seven() -> u8 {
        7
    }
    let bytes = encode(&value);
    let w: Wide = cty::from_slice(&bytes).unwrap();
    assert_eq!(w.big, u64::MAX);
    assert_eq!(w.env.len(), 20);
    assert_eq!(w.env["K19"], "v19");
    assert_eq!(w.long, long);
    assert_eq!(w.many, (0..20).collect::<Vec<_>>());
    assert_eq!(w.neg, i64::MIN);
    assert_eq!(w.nothing, 7);
    assert_eq!(cty::decode_value(&bytes).unwrap(), value);
}

// ---------------------------------------------------------------------------------------
// Errors name the field and say what was expected and found

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Greeting {
    greeting: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    mount: Vec<Mount>,
    #[serde(default)]
    ratio: f32,
}

#[test]
fn wrong_type_names_the_field() {
    let bytes = encode(&map(vec![("greeting", 5.into())]));
    let err = decode_err::<Greeting>(&bytes);
    assert_eq!(err.field(), Some("greeting"));
    assert_eq!(err.message(), "expected a string, found integer 5");
    assert_eq!(
        err.to_string(),
        "field \"greeting\": expected a string, found integer 5"
    );
}

#[test]
fn out_of_range_and_fractional_integers() {
    let bytes = encode(&map(vec![
        ("greeting", "hi".into()),
        ("port", 70000.into()),
    ]));
    let err = decode_err::<Greeting>(&bytes);
    assert_eq!(err.field(), Some("port"));
    assert_eq!(
        err.message(),
        "expected a whole number in the range of u16 (0 to 65535), found integer 70000"
    );

    let bytes = encode(&map(vec![("greeting", "hi".into()), ("port", (-1).into())]));
    let err = decode_err::<Greeting>(&bytes);
    assert_eq!(err.field(), Some("port"));
    assert!(err.message().contains("found integer -1"), "{err}");

    let bytes = encode(&map(vec![
        ("greeting", "hi".into()),
        ("port", Value::F64(1.5)),
    ]));
    let err = decode_err::<Greeting>(&bytes);
    assert_eq!(
        err.to_string(),
        "field \"port\": expected a whole number (u16), found number 1.5"
    );

    let bytes = encode(&map(vec![
        ("greeting", "hi".into()),
        ("port", "0.1".into()),
    ]));
    let err = decode_err::<Greeting>(&bytes);
    assert_eq!(err.field(), Some("port"));
    assert_eq!(
        err.message(),
        "expected a whole number (u16), found string \"0.1\""
    );

    let bytes = encode(&map(vec![
        ("greeting", "hi".into()),
        ("port", "1000000000000000000000000000000".into()),
    ]));
    let err = decode_err::<Greeting>(&bytes);
    assert!(err.message().contains("in the range of u16"), "{err}");

    let bytes = encode(&map(vec![
        ("greeting", "hi".into()),
        ("port", "many".into()),
    ]));
    let err = decode_err::<Greeting>(&bytes);
    assert_eq!(
        err.message(),
        "expected a number (u16), found string \"many\""
    );

    let bytes = encode(&map(vec![
        ("greeting", "hi".into()),
        ("ratio", "1e300".into()),
    ]));
    let err = decode_err::<Greeting>(&bytes);
    assert_eq!(err.field(), Some("ratio"));
    assert!(err.message().contains("range of f32"), "{err}");

    let err = decode_err::<i32>(&hex("cb3ff8000000000000"));
    assert_eq!(err.field(), None);
    assert_eq!(
        err.message(),
        "expected a whole number (i32), found number 1.5"
    );
}

#[test]
fn nested_paths_and_missing_fields() {
    let bytes = encode(&map(vec![
        ("greeting", "hi".into()),
        (
            "mount",
            Value::Array(vec![
                map(vec![("ro", true.into()), ("source", "/a".into())]),
                map(vec![("ro", false.into()), ("source", 9.into())]),
            ]),
        ),
    ]));
    let err = decode_err::<Greeting>(&bytes);
    assert_eq!(err.field(), Some("mount[1].source"));
    assert_eq!(err.message(), "expected a string, found integer 9");

    // A null required attribute counts as missing.
    let bytes = encode(&map(vec![
        ("greeting", "hi".into()),
        (
            "mount",
            Value::Array(vec![map(vec![("ro", true.into()), ("source", Value::Nil)])]),
        ),
    ]));
    let err = decode_err::<Greeting>(&bytes);
    assert_eq!(err.field(), Some("mount[0].source"));
    assert_eq!(err.message(), "missing required field");

    let err = decode_err::<Greeting>(&hex(EMPTY_OBJECT));
    assert_eq!(
        err.to_string(),
        "field \"greeting\": missing required field"
    );

    // Map keys that are not identifiers are quoted.
    let bytes = encode(&map(vec![("env", map(vec![("MY VAR", 1.into())]))]));
    let err = decode_err::<BTreeMap<String, BTreeMap<String, String>>>(&bytes);
    assert_eq!(err.field(), Some("env[\"MY VAR\"]"));
}

#[test]
fn unknown_value_names_the_field() {
    // {"greeting": <unknown>}
    let err = decode_err::<Greeting>(&hex("81a86772656574696e67d40000"));
    assert_eq!(
        err.to_string(),
        "field \"greeting\": value is unknown (not yet computed)"
    );
    // An unknown value in an attribute the driver does not read is not inspected:
    // {"greeting": "hi", "xxx": <unknown>}
    assert!(cty::from_slice::<Greeting>(&hex("82a86772656574696e67a26869a3787878d40000")).is_ok());
}

#[test]
fn unknown_keys_are_ignored_unless_denied() {
    let bytes = encode(&map(vec![("bogus", 1.into()), ("greeting", "hi".into())]));
    assert!(cty::from_slice::<Greeting>(&bytes).is_ok());

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Strict {
        greeting: String,
    }
    let err = decode_err::<Strict>(&bytes);
    assert_eq!(err.field(), Some("bogus"));
    assert_eq!(err.message(), "unknown field, expected `greeting`");
}

#[test]
fn malformed_input() {
    // Truncated: a map of 9 entries cut short.
    let full = hex(FULL);
    let err = decode_err::<TaskConfig>(&full[..full.len() - 3]);
    assert_eq!(err.field(), None);
    assert!(err.message().starts_with("invalid msgpack:"), "{err}");

    let err = decode_err::<TaskConfig>(&[0xa5, b'h']);
    assert!(err.message().starts_with("invalid msgpack:"), "{err}");

    // Trailing bytes after a complete value.
    let err = decode_err::<String>(&hex("a2686905"));
    assert_eq!(err.field(), None);
    assert_eq!(
        err.message(),
        "invalid msgpack: 1 trailing bytes after the value"
    );

    // Nesting deeper than the limit is refused rather than overflowing the stack.
    let deep = vec![0x91; 10_000];
    assert!(cty::decode_value(&deep).is_err());
    let mut ok = vec![0x91; 100];
    ok.push(0xc0);
    assert!(cty::decode_value(&ok).is_ok());

    // A string that is not UTF-8.
    let err = decode_err::<String>(&[0xa2, 0xff, 0xfe]);
    assert_eq!(
        err.message(),
        "expected a string, found a string that is not valid UTF-8"
    );
}

#[test]
fn tuple_length_is_checked() {
    let err = decode_err::<(String,)>(&hex("92a16101"));
    assert_eq!(err.message(), "expected 1 elements, found 2");
    let err = decode_err::<(String, i32, bool)>(&hex("92a16101"));
    assert!(err.message().contains("found 2 elements"), "{err}");
}
