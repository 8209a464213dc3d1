//! A serde deserializer over `name=value` string pairs, for path parameters and
//! query strings.
//!
//! A struct or map reads the pairs by name; a tuple or sequence reads the values
//! in order; a single value (`String`, `u32`, an enum of unit variants) needs
//! exactly one pair. Values convert like FastAPI's: numbers and `bool`s
//! (`true`/`false`/`1`/`0`/`yes`/`no`/`on`/`off`) are parsed from their text; an
//! `Option` is `Some` when its name is present and `None` when absent.

use serde::de::value::Error;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;

/// Deserializes `T` from `pairs`.
pub(crate) fn from_pairs<'de, T: de::Deserialize<'de>>(
    pairs: &'de [(String, String)],
) -> Result<T, String> {
    T::deserialize(Pairs(pairs)).map_err(|e| e.to_string())
}

struct Pairs<'de>(&'de [(String, String)]);

impl<'de> Pairs<'de> {
    fn single(&self) -> Result<Value<'de>, Error> {
        match self.0 {
            [(_, value)] => Ok(Value(value)),
            pairs => Err(de::Error::custom(format!(
                "expected exactly one value, found {}",
                pairs.len()
            ))),
        }
    }
}

macro_rules! forward_to_single {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.single()?.$method(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Pairs<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(PairMap {
            pairs: self.0.iter(),
            key: "",
            value: None,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(ValueSeq(self.0.iter()))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        if len != self.0.len() {
            return Err(de::Error::invalid_length(self.0.len(), &visitor));
        }
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.single()?.deserialize_enum(name, variants, visitor)
    }

    forward_to_single! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_f32
        deserialize_f64 deserialize_char deserialize_str deserialize_string deserialize_bytes
        deserialize_byte_buf deserialize_option deserialize_unit deserialize_identifier
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

struct PairMap<'de> {
    pairs: std::slice::Iter<'de, (String, String)>,
    key: &'de str,
    value: Option<&'de str>,
}

impl<'de> MapAccess<'de> for PairMap<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.pairs.next() {
            Some((key, value)) => {
                self.key = key;
                self.value = Some(value);
                seed.deserialize(Value(key)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let value = self.value.take().expect("next_key_seed comes first");
        seed.deserialize(Value(value))
            .map_err(|e| de::Error::custom(format!("`{}`: {e}", self.key)))
    }
}

struct ValueSeq<'de>(std::slice::Iter<'de, (String, String)>);

impl<'de> SeqAccess<'de> for ValueSeq<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.0.next() {
            Some((name, value)) => seed
                .deserialize(Value(value))
                .map(Some)
                .map_err(|e| de::Error::custom(format!("`{name}`: {e}"))),
            None => Ok(None),
        }
    }
}

/// One value, as text.
struct Value<'de>(&'de str);

macro_rules! parse_number {
    ($($method:ident => $visit:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0.parse() {
                Ok(n) => visitor.$visit(n),
                Err(e) => Err(de::Error::custom(format!("{:?} is not a valid number: {e}", self.0))),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Value<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.0)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => visitor.visit_bool(true),
            "false" | "0" | "no" | "off" => visitor.visit_bool(false),
            _ => Err(de::Error::custom(format!(
                "{:?} is not a valid boolean",
                self.0
            ))),
        }
    }

    parse_number! {
        deserialize_i8 => visit_i8, deserialize_i16 => visit_i16, deserialize_i32 => visit_i32,
        deserialize_i64 => visit_i64, deserialize_u8 => visit_u8, deserialize_u16 => visit_u16,
        deserialize_u32 => visit_u32, deserialize_u64 => visit_u64, deserialize_f32 => visit_f32,
        deserialize_f64 => visit_f64
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_enum(self.0.into_deserializer())
    }

    forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple tuple_struct
        map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::from_pairs;
    use serde::Deserialize;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Search {
        q: Option<String>,
        limit: u32,
        exact: bool,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        Cat,
        Dog,
    }

    #[test]
    fn structs_read_by_name_with_conversions() {
        let search: Search = from_pairs(&pairs(&[("limit", "5"), ("exact", "on")])).unwrap();
        assert_eq!(
            search,
            Search {
                q: None,
                limit: 5,
                exact: true
            }
        );
        let error =
            from_pairs::<Search>(&pairs(&[("limit", "five"), ("exact", "no")])).unwrap_err();
        assert!(
            error.contains("`limit`") && error.contains("five"),
            "{error}"
        );
        let error = from_pairs::<Search>(&pairs(&[("exact", "no")])).unwrap_err();
        assert!(error.contains("missing field `limit`"), "{error}");
    }

    #[test]
    fn single_values_tuples_and_enums() {
        assert_eq!(from_pairs::<u32>(&pairs(&[("id", "7")])).unwrap(), 7);
        assert_eq!(
            from_pairs::<String>(&pairs(&[("name", "a b")])).unwrap(),
            "a b"
        );
        assert_eq!(
            from_pairs::<(String, u8)>(&pairs(&[("a", "x"), ("b", "2")])).unwrap(),
            ("x".to_owned(), 2)
        );
        assert_eq!(
            from_pairs::<Kind>(&pairs(&[("k", "dog")])).unwrap(),
            Kind::Dog
        );
        assert!(from_pairs::<Kind>(&pairs(&[("k", "cow")])).is_err());
        assert!(from_pairs::<u32>(&pairs(&[("a", "1"), ("b", "2")])).is_err());
        assert!(from_pairs::<(u8, u8)>(&pairs(&[("a", "1")])).is_err());
    }
}
