//! The dashboard's HTML: every value a job carries goes through [`escape`],
//! and every page through [`page`] (one stylesheet, served by the dashboard
//! itself: no inline script or style, nothing from another host).

use std::fmt::Write;

use crate::jobs::cron::civil;

/// `text` safe inside an element or a quoted attribute.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` safe as one path segment or query value of a link.
pub(crate) fn url_part(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A whole page: `title`, the navigation (links under `base`), then `body`.
pub(crate) fn page(base: &str, title: &str, body: &str) -> String {
    let base = escape(base);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · afterward</title><link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"{base}/assets/dashboard.css\"></head>\
         <body><header><a class=\"brand\" href=\"{base}\">afterward</a><nav>\
         <a href=\"{base}\">Overview</a>\
         <a href=\"{base}/jobs\">Jobs</a>\
         <a href=\"{base}/dead\">Dead letters</a>\
         <a href=\"{base}/schedules\">Schedules</a>\
         </nav></header><main><h1>{title}</h1>\n{body}</main></body></html>\n",
        title = escape(title),
    )
}

/// A table of `head` and `rows` (each cell already HTML).
pub(crate) fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table>");
    if head.iter().any(|h| !h.is_empty()) {
        out.push_str("<thead><tr>");
        for h in head {
            let _ = write!(out, "<th>{}</th>", escape(h));
        }
        out.push_str("</tr></thead>");
    }
    out.push_str("<tbody>");
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\" class=\"none\">none</td></tr>",
            head.len()
        );
    }
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A POST form of one button, carrying the CSRF token.
pub(crate) fn action(action: &str, label: &str, csrf: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\">{}</button></form>",
        escape(action),
        escape(csrf),
        escape(label)
    )
}

/// A time in Unix milliseconds as `2026-12-03 13:45:07Z`.
pub(crate) fn time(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_a_value_is_text() {
        assert_eq!(
            escape("<img src=x onerror=alert(1)>\"'&"),
            "&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;"
        );
        assert_eq!(url_part("a b/c"), "a%20b%2Fc");
        assert_eq!(time(1_796_302_800_000), "2026-12-03 13:00:00Z");
    }
}
