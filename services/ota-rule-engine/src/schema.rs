//! What `vehicle` looks like to an expression: its fields, their types, and
//! the CEL value the interpreter sees for a [`Vehicle`].

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::Value;
use ota_common::vehicle::{Ecu, Vehicle};

/// A field of `vehicle`. Optional fields the vehicle lacks are absent from
/// its map, so `has(vehicle.model)` tells them apart and reading one is a
/// "no such key" error, the same as reading an ECU the vehicle lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Vin,
    Model,
    ModelYear,
    Platform,
    Gateway,
    Protocol,
    Region,
    Country,
    Tags,
    Attributes,
    Ecus,
    LastSeen,
}

impl Field {
    pub(crate) const ALL: [Field; 12] = [
        Field::Vin,
        Field::Model,
        Field::ModelYear,
        Field::Platform,
        Field::Gateway,
        Field::Protocol,
        Field::Region,
        Field::Country,
        Field::Tags,
        Field::Attributes,
        Field::Ecus,
        Field::LastSeen,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Field::Vin => "vin",
            Field::Model => "model",
            Field::ModelYear => "model_year",
            Field::Platform => "platform",
            Field::Gateway => "gateway",
            Field::Protocol => "protocol",
            Field::Region => "region",
            Field::Country => "country",
            Field::Tags => "tags",
            Field::Attributes => "attributes",
            Field::Ecus => "ecus",
            Field::LastSeen => "last_seen",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The text of a string-valued field, `None` when absent or not a string.
    pub(crate) fn text(self, v: &Vehicle) -> Option<&str> {
        match self {
            Field::Vin => Some(&v.vin),
            Field::Model => v.model.as_deref(),
            Field::Platform => v.platform.as_deref(),
            Field::Gateway => v.gateway.as_deref(),
            Field::Protocol => v.protocol.as_deref(),
            Field::Region => v.region.as_deref(),
            Field::Country => v.country.as_deref(),
            Field::ModelYear | Field::Tags | Field::Attributes | Field::Ecus | Field::LastSeen => {
                None
            }
        }
    }

    pub(crate) fn is_present(self, v: &Vehicle) -> bool {
        match self {
            Field::ModelYear => v.model_year.is_some(),
            Field::LastSeen => v.last_seen.is_some(),
            Field::Tags | Field::Attributes | Field::Ecus | Field::Vin => true,
            _ => self.text(v).is_some(),
        }
    }
}

pub(crate) const ECU_FIELDS: [&str; 2] = ["hw", "sw"];

/// The vehicle as a CEL map, for the interpreter.
pub(crate) fn vehicle_value(v: &Vehicle) -> Value {
    let mut map: HashMap<Key, Value> = HashMap::with_capacity(Field::ALL.len());
    let mut put = |field: Field, value: Value| {
        map.insert(Key::String(Arc::new(field.name().to_owned())), value);
    };
    for field in Field::ALL {
        if let Some(text) = field.text(v) {
            put(field, Value::String(Arc::new(text.to_owned())));
        }
    }
    if let Some(year) = v.model_year {
        put(Field::ModelYear, Value::Int(year.into()));
    }
    put(
        Field::Tags,
        Value::List(Arc::new(
            v.tags
                .iter()
                .map(|t| Value::String(Arc::new(t.clone())))
                .collect(),
        )),
    );
    put(
        Field::Attributes,
        string_map(v.attributes.iter().map(|(k, v)| (k, v.clone()))),
    );
    put(
        Field::Ecus,
        map_value(v.ecus.iter().map(|(name, ecu)| (name, ecu_value(ecu)))),
    );
    if let Some(t) = v.last_seen {
        put(Field::LastSeen, Value::Timestamp(t.fixed_offset()));
    }
    Value::Map(Map { map: Arc::new(map) })
}

fn ecu_value(ecu: &Ecu) -> Value {
    string_map([("hw", ecu.hw.clone()), ("sw", ecu.sw.clone())].into_iter())
}

fn string_map<'a, K: AsRef<str> + 'a>(entries: impl Iterator<Item = (K, String)>) -> Value {
    map_value(entries.map(|(k, v)| (k, Value::String(Arc::new(v)))))
}

fn map_value<K: AsRef<str>>(entries: impl Iterator<Item = (K, Value)>) -> Value {
    let map = entries
        .map(|(k, v)| (Key::String(Arc::new(k.as_ref().to_owned())), v))
        .collect::<HashMap<_, _>>();
    Value::Map(Map { map: Arc::new(map) })
}
