//! `tracing` events rendered as hclog JSON lines on stderr.
//!
//! Nomad reads a plugin's stderr line by line and re-logs every line that is
//! a JSON object with string `@level`, `@message` and `@timestamp` (Go layout
//! `2006-01-02T15:04:05.000000Z07:00`: exactly six fractional digits) under
//! the plugin's own logger, keeping every other key as a field. A line that
//! does not match is logged verbatim at DEBUG, and a non-string `@message` or
//! `@level` would panic the agent, so the format here is strict.

use std::fmt::Write as _;
use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Environment variable that sets the log filter (`tracing` `EnvFilter`
/// syntax, e.g. `debug` or `nomad_wasm_host=trace`). The `--log-level` flag
/// wins over it.
pub const LOG_ENV: &str = "NOMAD_WASM_LOG";

/// Installs the hclog JSON layer as the global subscriber.
///
/// `level` comes from the command line; without it [`LOG_ENV`] is read, and
/// without that `info` is used.
pub fn init(level: Option<&str>) {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).ok(),
        None => EnvFilter::try_from_env(LOG_ENV).ok(),
    }
    .unwrap_or_else(|| EnvFilter::new("info"));
    // Setting the global subscriber twice only happens in tests; ignore it.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(HclogLayer::stderr())
        .try_init();
}

/// Writes one complete log line.
type LineSink = Box<dyn Fn(&[u8]) + Send + Sync>;

/// A [`Layer`] that writes each event as one hclog JSON line.
pub struct HclogLayer {
    sink: LineSink,
}

impl std::fmt::Debug for HclogLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HclogLayer").finish_non_exhaustive()
    }
}

impl HclogLayer {
    /// A layer writing to stderr, one `write` call per line so concurrent
    /// lines never interleave.
    pub fn stderr() -> Self {
        HclogLayer::with_sink(|line| {
            let _ = std::io::stderr().lock().write_all(line);
        })
    }

    /// A layer handing each rendered line to `sink`.
    pub fn with_sink(sink: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        HclogLayer {
            sink: Box::new(sink),
        }
    }
}

impl<S> Layer<S> for HclogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = render(event, &now_timestamp());
        (self.sink)(line.as_bytes());
    }
}

/// Renders one event as an hclog JSON line (with the trailing newline).
fn render(event: &Event<'_>, timestamp: &str) -> String {
    let meta = event.metadata();
    let mut visitor = FieldVisitor::default();
    event.record(&mut visitor);

    let mut obj = Map::new();
    obj.insert(
        "@level".into(),
        Value::String(level_name(*meta.level()).into()),
    );
    obj.insert(
        "@message".into(),
        Value::String(visitor.message.unwrap_or_default()),
    );
    obj.insert("@timestamp".into(), Value::String(timestamp.to_owned()));
    obj.insert("@module".into(), Value::String(module_name(meta.target())));
    for (k, v) in visitor.fields {
        // Never let a field shadow the keys Nomad parses.
        let key = if k.starts_with('@') {
            format!("field{k}")
        } else {
            k
        };
        obj.insert(key, v);
    }
    let mut line = Value::Object(obj).to_string();
    line.push('\n');
    line
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// `nomad_wasm_host::nomad::driver` -> `nomad_wasm_host.nomad.driver`, the
/// dotted form hclog uses for sub-loggers.
fn module_name(target: &str) -> String {
    target.replace("::", ".")
}

/// The current UTC time in Go's `2006-01-02T15:04:05.000000Z07:00` layout.
pub fn now_timestamp() -> String {
    format_timestamp(time::OffsetDateTime::now_utc())
}

fn format_timestamp(t: time::OffsetDateTime) -> String {
    let mut s = String::with_capacity(27);
    let _ = write!(
        s,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    );
    s
}

#[derive(Default)]
struct FieldVisitor {
    message: Option<String>,
    fields: Vec<(String, Value)>,
}

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.fields
                .push((field.name().to_owned(), Value::String(value.to_owned())));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields
            .push((field.name().to_owned(), Value::from(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields
            .push((field.name().to_owned(), Value::from(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields
            .push((field.name().to_owned(), Value::from(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields
            .push((field.name().to_owned(), Value::from(value)));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.fields
            .push((field.name().to_owned(), Value::String(value.to_string())));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.fields
                .push((field.name().to_owned(), Value::String(text)));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn timestamp_has_six_fraction_digits_and_z() {
        let t = time::macros::datetime!(2024-01-02 03:04:05.000_007 UTC);
        assert_eq!(format_timestamp(t), "2024-01-02T03:04:05.000007Z");
        let now = now_timestamp();
        assert_eq!(now.len(), 27, "{now}");
        assert!(now.ends_with('Z'));
        assert_eq!(now.as_bytes()[19], b'.');
    }

    #[test]
    fn events_render_as_hclog_json_with_fields() {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let layer = HclogLayer::with_sink(move |line| sink.lock().unwrap().extend_from_slice(line));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(task_id = "a/b/c", code = 3, "task \"x\" exited");
        });
        let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert!(out.ends_with('\n'));
        assert_eq!(out.lines().count(), 1);
        let v: Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["@level"], "warn");
        assert_eq!(v["@message"], "task \"x\" exited");
        assert_eq!(v["task_id"], "a/b/c");
        assert_eq!(v["code"], 3);
        assert_eq!(v["@module"], "nomad_wasm_host.logging.tests");
        assert_eq!(v["@timestamp"].as_str().unwrap().len(), 27);
    }
}
