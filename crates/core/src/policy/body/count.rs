//! Deserializers that count a field's prompt characters without keeping
//! them: strings, content parts, messages, template variables and lists.

use super::*;

/// The characters of a string (which must be one), counted without copying it.
pub(super) struct Chars(usize);

impl Count for Chars {
    fn count(&self) -> usize {
        self.0
    }
}

impl<'de> Deserialize<'de> for Chars {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Chars;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Chars, E> {
                Ok(Chars(s.chars().count()))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Any JSON: the characters of every string in it, object keys included
/// (a JSON Schema the model reads, tool-call arguments).
pub(super) struct Strings(usize);

impl Count for Strings {
    fn count(&self) -> usize {
        self.0
    }
}

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Strings, E> {
                Ok(Strings(s.chars().count()))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Strings, E> {
                Ok(Strings(0))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Strings, E> {
                Ok(Strings(0))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Strings, E> {
                Ok(Strings(0))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Strings, E> {
                Ok(Strings(0))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Strings, E> {
                Ok(Strings(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                let mut n = 0;
                while let Some(Strings(m)) = seq.next_element()? {
                    n += m;
                }
                Ok(Strings(n))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strings, A::Error> {
                let mut n = 0;
                while let Some(Chars(k)) = map.next_key()? {
                    n += k + map.next_value::<Strings>()?.0;
                }
                Ok(Strings(n))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Content: a string, parts (items), or a single part.
pub(super) struct Content(usize);

impl Count for Content {
    fn count(&self) -> usize {
        self.0
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or content parts")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Content, E> {
                Ok(Content(s.chars().count()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Content, E> {
                Ok(Content(0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Content, A::Error> {
                sum_seq::<Item, _>(seq).map(Content)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Content, A::Error> {
                Item::deserialize(MapAccessDeserializer::new(map)).map(|i| Content(i.count()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `prompt` / `input` / `instructions`: a string, token ids (one each), an
/// array of any of these or of token arrays, or items (Responses input items,
/// a prompt template).
pub(super) struct Text(usize);

impl Count for Text {
    fn count(&self) -> usize {
        self.0
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, token ids, or input items")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Text, E> {
                Ok(Text(s.chars().count()))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Text, E> {
                Ok(Text(1))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Text, E> {
                Ok(Text(1))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Text, A::Error> {
                sum_seq::<Text, _>(seq).map(Text)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Text, A::Error> {
                Item::deserialize(MapAccessDeserializer::new(map)).map(|i| Text(i.count()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A prompt template's `variables`: names (not counted) to strings or parts.
pub(super) struct Variables(usize);

impl Count for Variables {
    fn count(&self) -> usize {
        self.0
    }
}

impl<'de> Deserialize<'de> for Variables {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Variables;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of template variables")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Variables, A::Error> {
                let mut n = 0;
                while map.next_key::<IgnoredAny>()?.is_some() {
                    n += map.next_value::<Content>()?.0;
                }
                Ok(Variables(n))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// An array of `T`, counted element by element and not kept.
pub(super) struct List<T>(usize, PhantomData<T>);

/// A message's `role`: nothing for OpenAI's own, its characters otherwise.
pub(super) struct RoleName(usize);

impl Count for RoleName {
    fn count(&self) -> usize {
        self.0
    }
}

impl<'de> Deserialize<'de> for RoleName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let role = std::borrow::Cow::<str>::deserialize(deserializer)?;
        const STANDARD: [&str; 6] = ["system", "developer", "user", "assistant", "tool", "function"];
        Ok(RoleName(if STANDARD.contains(&&*role) { 0 } else { role.chars().count() }))
    }
}

/// `messages`: their characters, and how many there are (each costs a few
/// template tokens of its own).
pub(super) struct Messages {
    chars: usize,
    pub(super) items: usize,
}

impl Count for Messages {
    fn count(&self) -> usize {
        self.chars
    }
}

impl<'de> Deserialize<'de> for Messages {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Messages;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Messages, A::Error> {
                let (mut chars, mut items) = (0usize, 0usize);
                while let Some(item) = seq.next_element::<Item>()? {
                    chars = chars.saturating_add(item.count());
                    items += 1;
                }
                Ok(Messages { chars, items })
            }
        }
        deserializer.deserialize_seq(V)
    }
}

impl<T> Count for List<T> {
    fn count(&self) -> usize {
        self.0
    }
}

impl<'de, T: Deserialize<'de> + Count> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Count> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<List<T>, A::Error> {
                sum_seq::<T, _>(seq).map(|n| List(n, PhantomData))
            }
        }
        deserializer.deserialize_seq(V(PhantomData))
    }
}

pub(super) fn sum_seq<'de, T: Deserialize<'de> + Count, A: SeqAccess<'de>>(mut seq: A) -> Result<usize, A::Error> {
    let mut n = 0usize;
    while let Some(item) = seq.next_element::<T>()? {
        n = n.saturating_add(item.count());
    }
    Ok(n)
}
