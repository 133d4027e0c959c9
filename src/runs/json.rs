//! Reading back the JSON this tool writes. JSON has no NaN: serde_json writes a NaN figure (an
//! interval no resample could estimate, a statistic of a set with one outcome) as `null`.
//! [`from_str`] reads such a `null` back as NaN wherever the type wants a number, and as
//! `None` wherever it wants an optional one, so a summary reads as the type it was written
//! from.

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

/// Parses `text` as `T`, a `null` read as NaN where `T` has a float.
pub fn from_str<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    let value: Value = serde_json::from_str(text)?;
    T::deserialize(NanAsNull(value))
}

/// A JSON value whose `null` reads as NaN where a float is asked for.
struct NanAsNull(Value);

impl<'de> de::Deserializer<'de> for NanAsNull {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(Items(items.into_iter())),
            Value::Object(fields) => visitor.visit_map(Fields::new(fields)),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_f64(f64::NAN),
            other => other.deserialize_f64(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_f32(f32::NAN),
            other => other.deserialize_f32(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(NanAsNull(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 char str string bytes byte_buf unit
        unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// The items of an array, each read as [`NanAsNull`].
struct Items(std::vec::IntoIter<Value>);

impl<'de> de::SeqAccess<'de> for Items {
    type Error = serde_json::Error;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0
            .next()
            .map(|v| seed.deserialize(NanAsNull(v)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// The fields of an object, each value read as [`NanAsNull`].
struct Fields {
    iter: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl Fields {
    fn new(fields: Map<String, Value>) -> Fields {
        Fields {
            iter: fields.into_iter(),
            value: None,
        }
    }
}

impl<'de> de::MapAccess<'de> for Fields {
    type Error = serde_json::Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.iter.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(key.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a value asked for before its key"))?;
        seed.deserialize(NanAsNull(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Figures {
        value: f64,
        bounds: [f64; 2],
        maybe: Option<f64>,
        nested: Vec<Inner>,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        name: String,
        x: f64,
    }

    #[test]
    fn nan_written_as_null_reads_back_as_nan_and_none_stays_none() {
        let written = Figures {
            value: f64::NAN,
            bounds: [0.25, f64::NAN],
            maybe: None,
            nested: vec![Inner {
                name: "a".into(),
                x: f64::NAN,
            }],
        };
        let text = serde_json::to_string(&written).unwrap();
        assert!(text.contains(r#""value":null"#), "{text}");
        // serde_json alone refuses it.
        assert!(serde_json::from_str::<Figures>(&text).is_err());
        let read: Figures = from_str(&text).unwrap();
        assert!(read.value.is_nan());
        assert_eq!(read.bounds[0], 0.25);
        assert!(read.bounds[1].is_nan());
        assert_eq!(read.maybe, None);
        assert_eq!(read.nested[0].name, "a");
        assert!(read.nested[0].x.is_nan());
        let read: Figures = from_str(&text.replace(r#""maybe":null"#, r#""maybe":0.5"#)).unwrap();
        assert_eq!(read.maybe, Some(0.5));
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_still_refused() {
        let good = r#"{"value":1.0,"bounds":[0,1],"maybe":null,"nested":[]}"#;
        assert!(from_str::<Figures>(good).is_ok());
        let extra = good.replace(r#""nested":[]"#, r#""nested":[],"other":1"#);
        let err = from_str::<Figures>(&extra).unwrap_err().to_string();
        assert!(err.contains("unknown field `other`"), "{err}");
        let wrong = good.replace(r#""value":1.0"#, r#""value":"high""#);
        assert!(from_str::<Figures>(&wrong).is_err());
        assert!(from_str::<Figures>(r#"{"value":1.0}"#).is_err());
    }
}
