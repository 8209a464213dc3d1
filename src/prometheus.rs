//! Writing the Prometheus text exposition format (version 0.0.4): one
//! metric family at a time, with its `HELP` and `TYPE` lines.

use std::fmt::Write;

/// Writes one metric family: `HELP` and `TYPE` lines, then each sample
/// (`labels` already formatted, `name="value",...`, or empty).
pub(crate) fn metric(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(&str, u64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// A label value as the format wants it: backslashes, quotes and line
/// feeds escaped.
pub(crate) fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
