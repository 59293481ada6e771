//! Feeds arbitrary bytes to the cty-msgpack decoder. Any panic, stack overflow or runaway
//! allocation is a bug: these bytes come from Nomad, outside the guest.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use nomad_driver_sdk::cty;
use serde::Deserialize;

/// A task config shaped like the ones in `shared/vectors/cty-msgpack.txt`.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
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

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Mount {
    ro: bool,
    source: String,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Opts {
    level: String,
}

/// Every integer width, text, enums and tuples: the number-conversion paths.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
#[allow(dead_code)]
struct Numbers {
    a: i8,
    b: u8,
    c: i16,
    d: u16,
    e: i32,
    f: u32,
    g: i64,
    h: u64,
    i: i128,
    j: u128,
    k: f32,
    l: f64,
    m: Option<char>,
    n: Option<Mode>,
    o: Option<(String, u16, bool)>,
    p: Vec<Option<Vec<u8>>>,
    q: BTreeMap<u32, Option<Mode>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Mode {
    Host,
    Bridge { name: String },
    Port(u16),
    Pair(i32, i32),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Strict {
    name: Option<String>,
}

fn check<T: serde::de::DeserializeOwned>(data: &[u8]) {
    if let Err(e) = cty::from_slice::<T>(data) {
        // Formatting the error must not panic either.
        let _ = e.to_string();
        let _ = (e.field(), e.message());
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = cty::decode_value(data) {
        let _ = cty::from_value::<serde_json::Value>(&value);
        let _ = cty::from_value::<rmpv::Value>(&value);
    }
    check::<TaskConfig>(data);
    check::<Numbers>(data);
    check::<Strict>(data);
    check::<serde_json::Value>(data);
    check::<rmpv::Value>(data);
    check::<BTreeMap<String, serde_json::Value>>(data);
    check::<Vec<Mode>>(data);
    check::<serde::de::IgnoredAny>(data);
});
