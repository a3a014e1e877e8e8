//! Re-reads a campaign file to find things the `Value` tree has lost: where a
//! node is (for error positions) and how a scalar was written (for versions that
//! YAML turned into numbers).
//!
//! serde gives a visitor no positions, but serde_yaml_ng stamps the current
//! node's position onto any error raised while deserializing it. So a probe walks
//! to the node and fails on purpose there; everything else is skipped with
//! `IgnoredAny`. One walk per reported problem is cheap for files this size.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::Seg;

/// What a [`Probe`] does once it reaches its path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Goal {
    /// Return the scalar's text exactly as written.
    Raw,
    /// Fail at the value so the error carries its position.
    Locate,
    /// Fail at the key (the path's last segment) so the error carries its position.
    LocateKey,
}

/// Marks errors raised on purpose by a probe, as opposed to ones raised because
/// the path is not in the text (e.g. it came from a merge key).
pub(super) const SENTINEL: &str = "\u{1}spec-probe-target\u{1}";

pub(super) fn probe(
    text: &str,
    path: &[Seg],
    goal: Goal,
) -> Result<Option<String>, serde_yaml_ng::Error> {
    Probe { path, goal }.deserialize(serde_yaml_ng::Deserializer::from_str(text))
}

/// Walks the document to `path`, skipping everything else.
#[derive(Clone, Copy)]
struct Probe<'p> {
    path: &'p [Seg],
    goal: Goal,
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        if self.path.is_empty() {
            // For a plain scalar this yields its text as written, never a number.
            d.deserialize_str(self)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // At the target, a type mismatch (a mapping where `deserialize_str` wants
        // a scalar) must also read as "found it": the error then names this text.
        f.write_str(if self.path.is_empty() {
            SENTINEL
        } else {
            "a mapping or a list"
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match (self.path.is_empty(), self.goal) {
            (true, Goal::Raw) => Ok(Some(v.to_owned())),
            (true, _) => Err(E::custom(SENTINEL)),
            (false, _) => Ok(None),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (want, rest) = match self.path.split_first() {
            Some((Seg::Key(k), rest)) => (Some(k.as_str()), rest),
            _ => (None, self.path),
        };
        let hit_key = self.goal == Goal::LocateKey && rest.is_empty();
        let mut found = None;
        while let Some(k) = map.next_key_seed(KeyProbe { want, hit: hit_key })? {
            if want.is_some() && k.as_deref() == want && found.is_none() {
                found = map.next_value_seed(Probe {
                    path: rest,
                    goal: self.goal,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let (want, rest) = match self.path.split_first() {
            Some((Seg::Index(i), rest)) => (Some(*i), rest),
            _ => (None, self.path),
        };
        let mut found = None;
        let mut i = 0;
        loop {
            if Some(i) == want {
                match seq.next_element_seed(Probe {
                    path: rest,
                    goal: self.goal,
                })? {
                    Some(v) => found = v,
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }
}

/// Reads a mapping key; fails on the wanted key when that key is the target.
/// Keys that are not strings (`1: x`, `? [a]`) are skipped rather than failed
/// on, or they would hide every node that comes after them.
struct KeyProbe<'p> {
    want: Option<&'p str>,
    hit: bool,
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! skip_scalars {
    ($($method:ident($ty:ty)),*) => {$(
        fn $method<E: de::Error>(self, _: $ty) -> Result<Self::Value, E> {
            Ok(None)
        }
    )*};
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if self.hit && self.want == Some(v) {
            return Err(E::custom(SENTINEL));
        }
        Ok(Some(v.to_owned()))
    }

    skip_scalars!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64)
    );

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_seq(seq).map(|_| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map).map(|_| None)
    }
}
