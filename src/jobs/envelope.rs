//! [`Envelope`]: a job as it is stored and sent, in one documented JSON form.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{json, Value};

/// The envelope format's version, `"v"` in the JSON.
pub const ENVELOPE_VERSION: u64 = 1;

/// A job on its way: its name and payload, with what the runner needs to
/// retry it and report on it. This is the wire format a broker stores (issue
/// #7), and it is used in-process too, so that moving jobs out of the process
/// changes no behaviour.
///
/// ```json
/// {"v": 1, "id": "3f9c…", "name": "send_email", "payload": {"to": "ada@example.com"},
///  "attempts": 0, "max_attempts": 5, "enqueued_at_ms": 1764260000000, "request_id": "…"}
/// ```
///
/// `attempts` counts the attempts already made; `enqueued_at_ms` is
/// milliseconds since the Unix epoch. After a failed attempt, a broker's
/// copy also has `"last_error"` (the status shows it until the job is done).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Envelope {
    /// The job's id, unique per enqueue.
    pub id: Arc<str>,
    /// The job's registered name ([`Job::NAME`](crate::Job::NAME)).
    pub name: Cow<'static, str>,
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
}

impl Envelope {
    /// The envelope as JSON.
    pub fn to_json(&self) -> Value {
        let mut value = json!({
            "v": ENVELOPE_VERSION,
            "id": &*self.id,
            "name": self.name,
            "payload": serde_json::from_str::<Value>(&self.payload).unwrap_or(Value::Null),
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "enqueued_at_ms": self.enqueued_at_ms,
            "request_id": &*self.request_id,
        });
        if let Some(error) = &self.last_error {
            value["last_error"] = error.as_str().into();
        }
        value
    }

    /// The envelope as JSON text, as a broker stores it: [`to_json`](Self::to_json)
    /// written directly, the payload copied as the text it already is.
    pub fn to_json_text(&self) -> String {
        use std::fmt::Write;
        let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        let payload = if self.payload.is_empty() {
            "null"
        } else {
            &self.payload
        };
        let mut out = String::with_capacity(self.payload.len() + 160);
        let _ = write!(
            out,
            "{{\"v\":{ENVELOPE_VERSION},\"id\":{},\"name\":{},\"payload\":{payload},\"attempts\":{},\"max_attempts\":{},\"enqueued_at_ms\":{},\"request_id\":{}}}",
            text(&self.id),
            text(&self.name),
            self.attempts,
            self.max_attempts,
            self.enqueued_at_ms,
            text(&self.request_id),
        );
        if let Some(error) = &self.last_error {
            out.pop();
            let _ = write!(out, ",\"last_error\":{}}}", text(error));
        }
        out
    }

    /// Reads an envelope from JSON text ([`to_json_text`](Self::to_json_text)).
    pub fn from_json_text(text: &str) -> Result<Envelope, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("the envelope is not JSON: {e}"))?;
        Envelope::from_json(&value)
    }

    /// Reads an envelope; `Err` names what is missing or of another version.
    pub fn from_json(value: &Value) -> Result<Envelope, String> {
        let version = value["v"].as_u64();
        if version != Some(ENVELOPE_VERSION) {
            return Err(format!("unsupported envelope version {:?}", value["v"]));
        }
        let text = |key: &str| {
            value[key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("envelope without a string {key:?}"))
        };
        let number = |key: &str| {
            value[key]
                .as_u64()
                .ok_or_else(|| format!("envelope without a number {key:?}"))
        };
        let small = |key: &str| {
            number(key).and_then(|n| u32::try_from(n).map_err(|_| format!("{key:?} too large")))
        };
        Ok(Envelope {
            id: text("id")?.into(),
            name: text("name")?.into(),
            payload: value.get("payload").unwrap_or(&Value::Null).to_string(),
            attempts: small("attempts")?,
            max_attempts: small("max_attempts")?,
            enqueued_at_ms: number("enqueued_at_ms")?,
            request_id: text("request_id")?.into(),
            last_error: value["last_error"].as_str().map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_round_trips_through_its_json() {
        let envelope = Envelope {
            id: "j1".into(),
            name: "send_email".into(),
            payload: json!({"to": "ada@example.com"}).to_string(),
            attempts: 2,
            max_attempts: 5,
            enqueued_at_ms: 1_764_260_000_000,
            request_id: "r1".into(),
            last_error: None,
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
    }
}
