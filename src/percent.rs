//! Percent-decoding of path segments and `application/x-www-form-urlencoded`
//! query strings.

use std::borrow::Cow;

/// Decodes `%XX` escapes (and `+` as a space when `plus_as_space`). A `%` not
/// followed by two hex digits is kept as it is, as Python's `unquote` does.
/// Fails if the decoded bytes are not UTF-8.
pub(crate) fn decode(input: &str, plus_as_space: bool) -> Result<Cow<'_, str>, String> {
    if !input.contains(['%', '+']) || (!plus_as_space && !input.contains('%')) {
        return Ok(Cow::Borrowed(input));
    }
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' if plus_as_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| format!("{input:?} is not UTF-8 once percent-decoded"))
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Splits a query string into decoded `(name, value)` pairs, in order. A name
/// without `=` has an empty value; empty pieces (`a=1&&b=2`) are skipped.
pub(crate) fn parse_query(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            Ok((
                decode(name, true)?.into_owned(),
                decode(value, true)?.into_owned(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{decode, parse_query};

    #[test]
    fn decodes_escapes_and_keeps_broken_ones() {
        assert_eq!(decode("a%20b%2Fc", false).unwrap(), "a b/c");
        assert_eq!(decode("caf%C3%A9", false).unwrap(), "café");
        assert_eq!(decode("100%", false).unwrap(), "100%");
        assert_eq!(decode("%zz%4", false).unwrap(), "%zz%4");
        assert_eq!(decode("a+b", false).unwrap(), "a+b");
        assert_eq!(decode("a+b", true).unwrap(), "a b");
        assert!(decode("%FF", false).is_err());
    }

    #[test]
    fn splits_a_query_string() {
        let pairs = parse_query("q=rust+web&limit=5&&flag&e=a%3Db").unwrap();
        let expected = [
            ("q", "rust web"),
            ("limit", "5"),
            ("flag", ""),
            ("e", "a=b"),
        ];
        assert_eq!(
            pairs,
            expected.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec()
        );
    }
}
