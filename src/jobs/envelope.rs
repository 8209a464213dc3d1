//! [`Envelope`]: a job as it is stored and sent, in one documented JSON form.

use std::borrow::Cow;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::queues::DEFAULT_QUEUE;

/// Milliseconds since the Unix epoch, now: the time base of every time an
/// envelope or a store keeps (`enqueued_at_ms`, a retry's due time).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The envelope format's version, `"v"` in the JSON.
pub const ENVELOPE_VERSION: u64 = 1;

/// A job on its way: its name and payload, with what the runner needs to
/// retry it and report on it. This is the wire format a broker stores (issue
/// #7), and it is used in-process too, so that moving jobs out of the process
/// changes no behaviour.
///
/// ```json
/// {"v": 1, "id": "3f9c…", "name": "send_email", "queue": "default", "payload": {"to": "ada@example.com"},
///  "attempts": 0, "max_attempts": 5, "enqueued_at_ms": 1764260000000, "request_id": "…"}
/// ```
///
/// `attempts` counts the attempts already made; `enqueued_at_ms` is
/// milliseconds since the Unix epoch. After a failed attempt, a broker's
/// copy also has `"last_error"` (the status shows it until the job is done),
/// and a unique job has `"unique"`, its key.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Envelope {
    /// The job's id, unique per enqueue.
    pub id: Arc<str>,
    /// The job's registered name ([`Job::NAME`](crate::Job::NAME)).
    pub name: Cow<'static, str>,
    /// The queue it waits in ([`Job::QUEUE`](crate::Job::QUEUE), or the
    /// enqueue's choice); `"default"` when the JSON has none.
    pub queue: Cow<'static, str>,
    /// The job's value, serialized as JSON text (parsed only to run it).
    pub payload: String,
    /// Attempts already made.
    pub attempts: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// When it was enqueued, in milliseconds since the Unix epoch.
    pub enqueued_at_ms: u64,
    /// The request that enqueued it.
    pub request_id: Arc<str>,
    /// The last failed attempt's error, on a broker's copy of a job waiting
    /// for its retry.
    pub last_error: Option<String>,
    /// Its uniqueness key (`NAME:KEY`), for a unique job
    /// ([`JobOptions::unique`](crate::JobOptions::unique)): released when it ends.
    pub unique: Option<String>,
}

impl Envelope {
    /// The envelope as JSON.
    pub fn to_json(&self) -> Value {
        let mut value = json!({
            "v": ENVELOPE_VERSION,
            "id": &*self.id,
            "name": self.name,
            "queue": self.queue,
            "payload": serde_json::from_str::<Value>(&self.payload).unwrap_or(Value::Null),
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "enqueued_at_ms": self.enqueued_at_ms,
            "request_id": &*self.request_id,
        });
        if let Some(error) = &self.last_error {
            value["last_error"] = error.as_str().into();
        }
        if let Some(unique) = &self.unique {
            value["unique"] = unique.as_str().into();
        }
        value
    }

    /// The envelope as JSON text, as a broker stores it: [`to_json`](Self::to_json)
    /// written directly, the payload copied as the text it already is.
    pub fn to_json_text(&self) -> String {
        use std::fmt::Write;
        let payload = if self.payload.is_empty() {
            "null"
        } else {
            &self.payload
        };
        let mut out = String::with_capacity(self.payload.len() + 160);
        let _ = write!(out, "{{\"v\":{ENVELOPE_VERSION},\"id\":");
        push_json_str(&mut out, &self.id);
        out.push_str(",\"name\":");
        push_json_str(&mut out, &self.name);
        out.push_str(",\"queue\":");
        push_json_str(&mut out, &self.queue);
        let _ = write!(
            out,
            ",\"payload\":{payload},\"attempts\":{},\"max_attempts\":{},\"enqueued_at_ms\":{},\"request_id\":",
            self.attempts, self.max_attempts, self.enqueued_at_ms,
        );
        push_json_str(&mut out, &self.request_id);
        if let Some(error) = &self.last_error {
            out.push_str(",\"last_error\":");
            push_json_str(&mut out, error);
        }
        if let Some(unique) = &self.unique {
            out.push_str(",\"unique\":");
            push_json_str(&mut out, unique);
        }
        out.push('}');
        out
    }

    /// Reads an envelope from JSON text ([`to_json_text`](Self::to_json_text)).
    ///
    /// A worker reads one per job, so this does not build a JSON tree: each
    /// field is taken as the raw text it is (the payload stays that text) and
    /// only the fields an envelope has are converted.
    pub fn from_json_text(text: &str) -> Result<Envelope, String> {
        let fields: Fields<'_> =
            serde_json::from_str(text).map_err(|e| format!("the envelope is not JSON: {e}"))?;
        let [version, id, name, queue, payload, attempts, max_attempts, enqueued_at_ms, request_id, last_error, unique] =
            fields.0;
        let version = version.and_then(|v| v.get().parse::<u64>().ok());
        if version != Some(ENVELOPE_VERSION) {
            return Err(format!("unsupported envelope version {version:?}"));
        }
        let text = |raw: Option<&RawValue>, key: &str| {
            raw.and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
                .ok_or_else(|| format!("envelope without a string {key:?}"))
        };
        let number = |raw: Option<&RawValue>, key: &str| {
            raw.and_then(|raw| raw.get().parse::<u64>().ok())
                .ok_or_else(|| format!("envelope without a number {key:?}"))
        };
        let small = |raw, key: &str| {
            number(raw, key)
                .and_then(|n| u32::try_from(n).map_err(|_| format!("{key:?} too large")))
        };
        Ok(Envelope {
            id: text(id, "id")?.into(),
            name: text(name, "name")?.into(),
            queue: match queue {
                Some(_) => text(queue, "queue")?.into(),
                None => Cow::Borrowed(DEFAULT_QUEUE),
            },
            payload: payload.map_or("null", RawValue::get).to_owned(),
            attempts: small(attempts, "attempts")?,
            max_attempts: small(max_attempts, "max_attempts")?,
            enqueued_at_ms: number(enqueued_at_ms, "enqueued_at_ms")?,
            request_id: text(request_id, "request_id")?.into(),
            last_error: last_error.and_then(|raw| serde_json::from_str(raw.get()).ok()),
            unique: unique.and_then(|raw| serde_json::from_str(raw.get()).ok()),
        })
    }

    /// Reads an envelope; `Err` names what is missing or of another version.
    /// The same rules as [`from_json_text`](Self::from_json_text), which it
    /// reads the value's text with.
    pub fn from_json(value: &Value) -> Result<Envelope, String> {
        Envelope::from_json_text(&value.to_string())
    }
}

/// Appends `s` as a JSON string: as it is between quotes when nothing in it
/// needs escaping (ids, names: the common case, without an allocation),
/// through serde_json otherwise.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
    }
}

/// The names of an envelope's fields, in the order [`Fields`] keeps them.
const FIELDS: [&str; 11] = [
    "v",
    "id",
    "name",
    "queue",
    "payload",
    "attempts",
    "max_attempts",
    "enqueued_at_ms",
    "request_id",
    "last_error",
    "unique",
];

/// An envelope's fields as the JSON text they are, borrowed from the
/// envelope's text; other keys are skipped.
struct Fields<'a>([Option<&'a RawValue>; FIELDS.len()]);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = [None; FIELDS.len()];
                while let Some(key) = map.next_key::<Key>()? {
                    match key.0 {
                        Some(i) => fields[i] = Some(map.next_value()?),
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// A key of an envelope: its place in [`FIELDS`], or `None` for another.
struct Key(Option<usize>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl Visitor<'_> for Visit {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(Key(FIELDS.iter().position(|&f| f == key)))
            }
        }
        deserializer.deserialize_identifier(Visit)
    }
}

/// A job that will not run again, as the dead-letter list keeps it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The job as it was last attempted.
    pub envelope: Envelope,
    /// The last attempt's error.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_round_trips_through_its_json() {
        let envelope = Envelope {
            id: "j1".into(),
            name: "send_email".into(),
            queue: "mail".into(),
            payload: json!({"to": "ada@example.com"}).to_string(),
            attempts: 2,
            max_attempts: 5,
            enqueued_at_ms: 1_764_260_000_000,
            request_id: "r1".into(),
            last_error: None,
            unique: None,
        };
        let json = envelope.to_json();
        assert_eq!(json["v"], 1);
        assert_eq!(Envelope::from_json(&json), Ok(envelope.clone()));
        let text = envelope.to_json_text();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), json);
        assert_eq!(Envelope::from_json_text(&text), Ok(envelope.clone()));
        assert!(Envelope::from_json_text("{")
            .unwrap_err()
            .contains("not JSON"));
        let failed = Envelope {
            last_error: Some("the \"mail\" server\nis gone".into()),
            ..envelope.clone()
        };
        let text = failed.to_json_text();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            failed.to_json()
        );
        assert_eq!(Envelope::from_json_text(&text), Ok(failed));
        let mut other = json.clone();
        other["v"] = json!(2);
        assert!(Envelope::from_json(&other).unwrap_err().contains("version"));
        assert!(Envelope::from_json_text(&other.to_string())
            .unwrap_err()
            .contains("version"));
    }

    #[test]
    fn an_envelope_is_read_whatever_its_key_order_escapes_and_extra_keys() {
        let text = r#"{"extra": {"nested": [1, 2]}, "request_id": "r\u0031", "attempts": 1,
            "payload": {"to": "a\"b", "n": [1, 2.5]}, "max_attempts": 3, "name": "send_email",
            "enqueued_at_ms": 7, "id": "j\n1", "v": 1}"#;
        let envelope = Envelope::from_json_text(text).unwrap();
        assert_eq!(&*envelope.id, "j\n1");
        assert_eq!(&*envelope.request_id, "r1");
        assert_eq!(envelope.name, "send_email");
        assert_eq!(envelope.queue, "default", "no queue: the default one");
        assert_eq!(
            serde_json::from_str::<Value>(&envelope.payload).unwrap(),
            json!({"to": "a\"b", "n": [1, 2.5]})
        );
        assert_eq!((envelope.attempts, envelope.max_attempts), (1, 3));
        assert_eq!(envelope.enqueued_at_ms, 7);
        assert_eq!(envelope.last_error, None);
        let missing = text.replace(r#""id": "j\n1", "#, "");
        assert_eq!(
            Envelope::from_json_text(&missing).unwrap_err(),
            "envelope without a string \"id\""
        );
        let negative = text.replace(r#""attempts": 1"#, r#""attempts": -1"#);
        assert!(Envelope::from_json_text(&negative)
            .unwrap_err()
            .contains("\"attempts\""));
        assert!(Envelope::from_json_text("[1]")
            .unwrap_err()
            .contains("not JSON"));
    }
}
