//! Logging for the plugin process: a `tracing` layer that writes one JSON
//! object per line to stderr in hclog's shape (`@level`, `@message`,
//! `@timestamp`, `@module`, then the event's fields), which terraform's
//! go-plugin client parses and shows under `TF_LOG`. Also owns the choice of
//! level from `TF_LOG_PROVIDER_BERTH`, `TF_LOG_PROVIDER` and `TF_LOG`.
//!
//! Stdout is never written here: it belongs to the plugin handshake.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// `@module` of events logged by the plugin binary.
pub const PLUGIN_MODULE: &str = "provider.terraform-provider-berth";

/// `@module` of events logged by the `berth` command.
pub const ENGINE_MODULE: &str = "berth";

/// The environment variables that set the level, most specific first.
const LEVEL_VARIABLES: [&str; 3] = ["TF_LOG_PROVIDER_BERTH", "TF_LOG_PROVIDER", "TF_LOG"];

/// The level asked for by the environment, read through `lookup` (so tests
/// pass a map instead of changing the process environment).
///
/// The first of `TF_LOG_PROVIDER_BERTH`, `TF_LOG_PROVIDER`, `TF_LOG` that is
/// set and not empty decides: `TRACE`, `DEBUG`, `INFO`, `WARN`, `ERROR`
/// (any case), `JSON` means trace (terraform's own meaning), `OFF` and
/// anything unknown mean errors only, as does no variable at all: an error is
/// always worth showing.
pub fn level_from(lookup: impl Fn(&str) -> Option<String>) -> LevelFilter {
    let chosen = LEVEL_VARIABLES
        .iter()
        .filter_map(|name| lookup(name))
        .map(|value| value.trim().to_ascii_uppercase())
        .find(|value| !value.is_empty());
    match chosen.as_deref() {
        Some("TRACE") | Some("JSON") => LevelFilter::TRACE,
        Some("DEBUG") => LevelFilter::DEBUG,
        Some("INFO") => LevelFilter::INFO,
        Some("WARN") => LevelFilter::WARN,
        _ => LevelFilter::ERROR,
    }
}

/// Installs the hclog JSON layer on stderr as the global subscriber, at the
/// level the environment asks for. Events from Berth's own modules use that
/// level; dependencies (tonic, hyper, h2, rustls) are capped at `INFO` so
/// `TF_LOG=trace` stays readable. Calling it twice is harmless: the second
/// call changes nothing.
pub fn init(module: &'static str) {
    let level = level_from(|name| std::env::var(name).ok());
    let dependencies = level.min(LevelFilter::INFO);
    let filter = Targets::new()
        .with_target("berth", level)
        .with_target("terraform_provider_berth", level)
        .with_default(dependencies);
    let layer = HclogLayer::new(module, std::io::stderr).with_filter(filter);
    // Err only when a subscriber is already installed; keep that one.
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// A `tracing` layer writing hclog-shaped JSON lines to the writer that
/// `make_writer` returns for each event.
pub struct HclogLayer<M> {
    module: &'static str,
    make_writer: M,
}

impl<M, W> HclogLayer<M>
where
    M: Fn() -> W + Send + Sync + 'static,
    W: Write,
{
    /// A layer that tags every line with `@module` = `module`.
    pub fn new(module: &'static str, make_writer: M) -> Self {
        HclogLayer {
            module,
            make_writer,
        }
    }
}

impl<S, M, W> Layer<S> for HclogLayer<M>
where
    S: Subscriber,
    M: Fn() -> W + Send + Sync + 'static,
    W: Write,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = render_line(self.module, event, SystemTime::now());
        let mut writer = (self.make_writer)();
        // A log line that cannot be written has nowhere else to go.
        let _ = writer.write_all(line.as_bytes());
        let _ = writer.flush();
    }
}

/// One event as one JSON line (with its newline).
fn render_line(module: &str, event: &Event<'_>, now: SystemTime) -> String {
    let mut fields = FieldCollector::default();
    event.record(&mut fields);
    let mut object = Map::new();
    object.insert(
        "@level".to_owned(),
        Value::from(level_name(*event.metadata().level())),
    );
    object.insert("@message".to_owned(), Value::from(fields.message));
    object.insert("@module".to_owned(), Value::from(module));
    object.insert("@timestamp".to_owned(), Value::from(hclog_timestamp(now)));
    for (key, value) in fields.fields {
        // Never let a field named like a reserved key replace it.
        if !key.starts_with('@') {
            object.insert(key, value);
        }
    }
    let mut line = Value::Object(object).to_string();
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

/// Gathers an event's `message` and its other fields as JSON values.
#[derive(Default)]
struct FieldCollector {
    message: String,
    fields: Vec<(String, Value)>,
}

impl FieldCollector {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
        } else {
            self.fields.push((field.name().to_owned(), value));
        }
    }
}

impl Visit for FieldCollector {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }
}

/// `now` in UTC as hclog writes it and go-plugin parses it
/// (`2006-01-02T15:04:05.000000Z07:00`): exactly six fractional digits.
pub fn hclog_timestamp(now: SystemTime) -> String {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let days = i64::try_from(seconds / 86_400).unwrap_or(0);
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since_epoch.subsec_micros()
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`), so dates need no calendar dependency.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1..=12, 1..=31).
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn level_prefers_the_most_specific_variable() {
        let lookup = env(&[
            ("TF_LOG", "trace"),
            ("TF_LOG_PROVIDER", "info"),
            ("TF_LOG_PROVIDER_BERTH", "WARN"),
        ]);
        assert_eq!(level_from(lookup), LevelFilter::WARN);
        let lookup = env(&[("TF_LOG", "trace"), ("TF_LOG_PROVIDER", "debug")]);
        assert_eq!(level_from(lookup), LevelFilter::DEBUG);
        assert_eq!(level_from(env(&[("TF_LOG", "JSON")])), LevelFilter::TRACE);
    }

    #[test]
    fn level_defaults_to_errors_only() {
        assert_eq!(level_from(env(&[])), LevelFilter::ERROR);
        assert_eq!(level_from(env(&[("TF_LOG", "off")])), LevelFilter::ERROR);
        assert_eq!(level_from(env(&[("TF_LOG", "loud")])), LevelFilter::ERROR);
        // An empty specific variable does not hide a set general one.
        let lookup = env(&[("TF_LOG_PROVIDER_BERTH", ""), ("TF_LOG", "info")]);
        assert_eq!(level_from(lookup), LevelFilter::INFO);
    }

    #[test]
    fn timestamps_have_microseconds_and_utc_offset() {
        let at = UNIX_EPOCH + Duration::new(1_795_442_400, 1_234_567);
        assert_eq!(hclog_timestamp(at), "2026-11-23T14:00:00.001234Z");
        assert_eq!(hclog_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(hclog_timestamp(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn events_become_hclog_json_lines() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let layer = HclogLayer::new(PLUGIN_MODULE, move || sink.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                port = 4242_u64,
                tls = true,
                peer = "127.0.0.1",
                "plugin listening"
            );
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.ends_with('\n'));
        let line: Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["@level"], "warn");
        assert_eq!(line["@message"], "plugin listening");
        assert_eq!(line["@module"], PLUGIN_MODULE);
        assert_eq!(line["port"], 4242);
        assert_eq!(line["tls"], true);
        assert_eq!(line["peer"], "127.0.0.1");
        let stamp = line["@timestamp"].as_str().unwrap();
        assert_eq!(stamp.len(), "2026-11-23T14:00:00.000000Z".len());
        assert!(stamp.ends_with('Z'));
    }
}
