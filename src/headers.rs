//! [`Headers`]: an ordered list of header fields with case-insensitive lookup.

use std::borrow::Cow;

/// HTTP header fields, in the order they were sent or added.
///
/// Names compare case-insensitively. A name may appear more than once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Names and values the crate sets itself (`Content-Type`, `X-Request-Id`)
    /// are often static text: kept borrowed, not copied, per response.
    fields: Vec<(Cow<'static, str>, Cow<'static, str>)>,
}

impl Headers {
    /// No fields.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &**v)
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &**v)
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// No fields, with room for `n`.
    pub(crate) fn with_capacity(n: usize) -> Headers {
        Headers {
            fields: Vec::with_capacity(n),
        }
    }

    /// A field as read from a request: a name sent exactly as one of the
    /// common ones (`Host`, `User-Agent`, …) is kept as that static text,
    /// not copied.
    pub(crate) fn append_received(&mut self, name: &str, value: String) {
        const COMMON: [&str; 12] = [
            "Host",
            "User-Agent",
            "Accept",
            "Accept-Encoding",
            "Accept-Language",
            "Connection",
            "Content-Type",
            "Content-Length",
            "Cookie",
            "Referer",
            "Cache-Control",
            "X-Request-Id",
        ];
        let name = match COMMON.iter().find(|&&common| common == name) {
            Some(&common) => Cow::Borrowed(common),
            None => Cow::Owned(name.to_owned()),
        };
        self.fields.push((name, Cow::Owned(value)));
    }

    /// Adds a field, keeping any others of the same name.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.fields
            .push((Cow::Owned(name.into()), Cow::Owned(value.into())));
    }

    /// Sets `name` to `value`, replacing any fields of that name.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.set(Cow::Owned(name.into()), Cow::Owned(value.into()));
    }

    /// [`insert`](Self::insert) of text the crate holds anyway: no copy of
    /// a static name or value.
    pub(crate) fn set(&mut self, name: Cow<'static, str>, value: Cow<'static, str>) {
        self.remove(&name);
        self.fields.push((name, value));
    }

    /// Removes every field named `name`.
    pub fn remove(&mut self, name: &str) {
        self.fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// All fields as `(name, value)`, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(n, v)| (&**n, &**v))
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Headers {
        Headers {
            fields: iter
                .into_iter()
                .map(|(n, v)| (Cow::Owned(n.into()), Cow::Owned(v.into())))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Headers;

    #[test]
    fn lookup_ignores_case_and_insert_replaces() {
        let mut headers: Headers = [("Content-Type", "text/plain"), ("X-A", "1"), ("x-a", "2")]
            .into_iter()
            .collect();
        assert_eq!(headers.get("content-type"), Some("text/plain"));
        assert_eq!(headers.get_all("X-a").collect::<Vec<_>>(), ["1", "2"]);
        headers.insert("X-A", "3");
        assert_eq!(headers.get_all("x-a").collect::<Vec<_>>(), ["3"]);
        assert_eq!(headers.len(), 2);
    }

    #[test]
    fn received_names_are_kept_as_sent() {
        let mut headers = Headers::with_capacity(3);
        headers.append_received("Host", "a".into());
        headers.append_received("host", "b".into());
        headers.append_received("X-Custom", "c".into());
        let names: Vec<&str> = headers.iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["Host", "host", "X-Custom"]);
        assert!(matches!(
            headers.fields[0].0,
            std::borrow::Cow::Borrowed("Host")
        ));
        assert!(matches!(headers.fields[1].0, std::borrow::Cow::Owned(_)));
        assert_eq!(headers.get_all("HOST").collect::<Vec<_>>(), ["a", "b"]);
    }
}
