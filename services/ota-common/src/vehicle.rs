//! The vehicle record as stored and served ([`Vehicle`]) and as one source
//! states it ([`VehiclePatch`]: an import line, a PUT body, a self-report).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::vin::Vin;
use ota_proto::v1 as pb;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ecu {
    /// Hardware version.
    #[serde(default)]
    pub hw: String,
    /// Software version.
    #[serde(default)]
    pub sw: String,
}

/// A vehicle as the platform knows it after merging every source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Vehicle {
    #[schema(pattern = "^[A-HJ-NPR-Z0-9]{17}$")]
    pub vin: String,
    // Unset fields are left out, never written as null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub model_year: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub country: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// By ECU name.
    #[serde(default)]
    pub ecus: BTreeMap<String, Ecu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_seen: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Field path to the source whose value is current.
    #[serde(default)]
    pub provenance: BTreeMap<String, String>,
    /// Field path to when its current value, or its source, was set.
    #[serde(default)]
    pub provenance_at: BTreeMap<String, DateTime<Utc>>,
}

impl Vehicle {
    pub fn new(vin: impl Into<String>, now: DateTime<Utc>) -> Self {
        Self {
            vin: vin.into(),
            model: None,
            model_year: None,
            platform: None,
            gateway: None,
            protocol: None,
            region: None,
            country: None,
            tags: Vec::new(),
            attributes: BTreeMap::new(),
            ecus: BTreeMap::new(),
            last_seen: None,
            created_at: now,
            updated_at: now,
            provenance: BTreeMap::new(),
            provenance_at: BTreeMap::new(),
        }
    }
}

/// The source of a vehicle's own inventory reports.
pub const VEHICLE_SOURCE: &str = "vehicle";
/// The source of ECU software versions recorded when a vehicle reports an
/// install action succeeded; the vehicle store ranks it as
/// [`VEHICLE_SOURCE`].
pub const INSTALL_SOURCE: &str = "install";

/// What one source says about one vehicle. Absent fields say nothing; they
/// never clear a value another source set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VehiclePatch {
    /// Required, except in the body of `PUT /api/v1/vehicles/{vin}`, where
    /// the path names the vehicle.
    #[schema(pattern = "^[A-HJ-NPR-Z0-9]{17}$", required = false)]
    pub vin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_year: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Replaces the vehicle's tags.
    pub tags: Option<Vec<String>>,
    /// Values may be strings, numbers or booleans; they are kept as text.
    #[serde(
        default,
        deserialize_with = "scalar_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schema(schema_with = attribute_values)]
    pub attributes: BTreeMap<String, String>,
    /// By ECU name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ecus: BTreeMap<String, EcuPatch>,
}

/// What [`scalar_map`] accepts, for the API documents.
fn attribute_values() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([
                    Type::String,
                    Type::Number,
                    Type::Boolean,
                    Type::Null,
                ]))
                .into(),
        )))
        .build()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EcuPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sw: Option<String>,
}

/// Attribute values may be written as JSON strings, numbers or booleans; they
/// are kept as text so that targeting compares them one way.
fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
    raw.into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(Ok((k, s))),
            serde_json::Value::Number(n) => Some(Ok((k, n.to_string()))),
            serde_json::Value::Bool(b) => Some(Ok((k, b.to_string()))),
            _ => Some(Err(serde::de::Error::custom(format!(
                "attribute {k:?} must be a string, number or boolean"
            )))),
        })
        .collect()
}

/// Bounds of one vehicle's record: of what one write may carry, and of the
/// record all writes together leave behind (the vehicle store refuses a
/// write that would grow a field past its bound). The rule engine's cost
/// model reads them too: a `vehicle` holds at most this much.
///
/// Tags a vehicle carries (a write replaces the list).
pub const MAX_TAGS: usize = 256;
/// Attributes a vehicle carries, from all sources together.
pub const MAX_ATTRIBUTES: usize = 256;
/// ECUs a vehicle carries, from all sources together.
pub const MAX_ECUS: usize = 256;
/// Bytes of a name: a tag, an attribute key, an ECU name.
pub const MAX_KEY_LEN: usize = 64;
/// Bytes of a value: an attribute value, an ECU's hw or sw, and the scalar
/// fields (model, platform, ...).
pub const MAX_VALUE_LEN: usize = 256;

/// A bound of [`Vehicle`] that the merged record would pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundExceeded {
    /// `tags`, `attributes` or `ecus`.
    pub field: &'static str,
    /// Entries the record would hold.
    pub count: usize,
    pub limit: usize,
}

impl Vehicle {
    /// Checks the merged record against [`MAX_TAGS`], [`MAX_ATTRIBUTES`]
    /// and [`MAX_ECUS`]. `before` is the record as stored: a field already
    /// past its bound (written before the bound existed) may stay as large
    /// as it is, but not grow. Names and values are bounded by
    /// [`VehiclePatch::validate`], which every write passes.
    pub fn check_bounds(&self, before: Option<&Vehicle>) -> Result<(), BoundExceeded> {
        let counts = |v: &Vehicle| [v.tags.len(), v.attributes.len(), v.ecus.len()];
        let now = counts(self);
        let was = before.map_or([0; 3], counts);
        for (i, (field, limit)) in [
            ("tags", MAX_TAGS),
            ("attributes", MAX_ATTRIBUTES),
            ("ecus", MAX_ECUS),
        ]
        .into_iter()
        .enumerate()
        {
            if now[i] > limit && now[i] > was[i] {
                return Err(BoundExceeded {
                    field,
                    count: now[i],
                    limit,
                });
            }
        }
        Ok(())
    }
}

impl VehiclePatch {
    /// Checks everything a store relies on; the message names the bad value.
    pub fn validate(&self) -> Result<Vin, String> {
        let vin = Vin::parse(&self.vin).map_err(|e| e.to_string())?;
        if let Some(year) = self.model_year {
            if !(1900..=2100).contains(&year) {
                return Err(format!("model_year {year} is out of range 1900..=2100"));
            }
        }
        for (field, value) in [
            ("model", &self.model),
            ("platform", &self.platform),
            ("gateway", &self.gateway),
            ("protocol", &self.protocol),
            ("region", &self.region),
            ("country", &self.country),
        ] {
            if let Some(v) = value {
                check_text(field, v)?;
            }
        }
        if let Some(tags) = &self.tags {
            if tags.len() > MAX_TAGS {
                return Err(format!("too many tags: {} (max {MAX_TAGS})", tags.len()));
            }
            for t in tags {
                check_name("tag", t)?;
            }
        }
        if self.attributes.len() > MAX_ATTRIBUTES {
            return Err(format!(
                "too many attributes: {} (max {MAX_ATTRIBUTES})",
                self.attributes.len()
            ));
        }
        for (k, v) in &self.attributes {
            check_name("attribute name", k)?;
            check_text(&format!("attributes.{k}"), v)?;
        }
        if self.ecus.len() > MAX_ECUS {
            return Err(format!(
                "too many ecus: {} (max {MAX_ECUS})",
                self.ecus.len()
            ));
        }
        for (name, ecu) in &self.ecus {
            check_name("ecu name", name)?;
            for (part, v) in [("hw", &ecu.hw), ("sw", &ecu.sw)] {
                if let Some(v) = v {
                    check_text(&format!("ecus.{name}.{part}"), v)?;
                }
            }
        }
        Ok(vin)
    }
}

fn check_text(field: &str, v: &str) -> Result<(), String> {
    if v.len() > MAX_VALUE_LEN {
        return Err(format!("{field} is longer than {MAX_VALUE_LEN} bytes"));
    }
    if v.chars().any(char::is_control) {
        return Err(format!("{field} {v:?} contains control characters"));
    }
    Ok(())
}

/// Names (tags, attribute keys, ECU names) end up in field paths and CEL map
/// keys, so they are restricted to a safe, printable alphabet.
fn check_name(what: &str, v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= MAX_KEY_LEN
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {:?} must be 1-{MAX_KEY_LEN} characters of A-Z, a-z, 0-9, _ - : /",
            clip(v)
        ))
    }
}

/// The start of a rejected value, so an error message stays short however
/// long the value was.
fn clip(v: &str) -> String {
    const SHOWN: usize = MAX_KEY_LEN + 16;
    match v.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}...", &v[..end]),
        None => v.to_owned(),
    }
}

pub fn to_timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn from_timestamp(t: &prost_types::Timestamp) -> DateTime<Utc> {
    Utc.timestamp_opt(t.seconds, t.nanos.clamp(0, 999_999_999) as u32)
        .single()
        .unwrap_or_default()
}

impl From<VehiclePatch> for pb::Vehicle {
    fn from(p: VehiclePatch) -> Self {
        pb::Vehicle {
            vin: p.vin,
            model: p.model,
            model_year: p.model_year,
            platform: p.platform,
            gateway: p.gateway,
            protocol: p.protocol,
            region: p.region,
            country: p.country,
            tags_set: p.tags.is_some(),
            tags: p.tags.unwrap_or_default(),
            attributes: p.attributes.into_iter().collect(),
            ecus: p
                .ecus
                .into_iter()
                .map(|(k, e)| {
                    (
                        k,
                        pb::Ecu {
                            hw: e.hw.unwrap_or_default(),
                            sw: e.sw.unwrap_or_default(),
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }
}

impl From<pb::Vehicle> for VehiclePatch {
    fn from(v: pb::Vehicle) -> Self {
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        VehiclePatch {
            vin: v.vin,
            model: v.model,
            model_year: v.model_year,
            platform: v.platform,
            gateway: v.gateway,
            protocol: v.protocol,
            region: v.region,
            country: v.country,
            tags: (v.tags_set || !v.tags.is_empty()).then_some(v.tags),
            attributes: v.attributes.into_iter().collect(),
            ecus: v
                .ecus
                .into_iter()
                .map(|(k, e)| {
                    (
                        k,
                        EcuPatch {
                            hw: non_empty(e.hw),
                            sw: non_empty(e.sw),
                        },
                    )
                })
                .collect(),
        }
    }
}

impl From<Vehicle> for pb::Vehicle {
    fn from(v: Vehicle) -> Self {
        pb::Vehicle {
            vin: v.vin,
            model: v.model,
            model_year: v.model_year,
            platform: v.platform,
            gateway: v.gateway,
            protocol: v.protocol,
            region: v.region,
            country: v.country,
            tags: v.tags,
            tags_set: true,
            attributes: v.attributes.into_iter().collect(),
            ecus: v
                .ecus
                .into_iter()
                .map(|(k, e)| (k, pb::Ecu { hw: e.hw, sw: e.sw }))
                .collect(),
            last_seen: v.last_seen.map(to_timestamp),
            created_at: Some(to_timestamp(v.created_at)),
            updated_at: Some(to_timestamp(v.updated_at)),
            provenance: v.provenance.into_iter().collect(),
            provenance_at: v
                .provenance_at
                .into_iter()
                .map(|(k, t)| (k, to_timestamp(t)))
                .collect(),
        }
    }
}

impl From<pb::Vehicle> for Vehicle {
    fn from(v: pb::Vehicle) -> Self {
        Vehicle {
            vin: v.vin,
            model: v.model,
            model_year: v.model_year,
            platform: v.platform,
            gateway: v.gateway,
            protocol: v.protocol,
            region: v.region,
            country: v.country,
            tags: v.tags,
            attributes: v.attributes.into_iter().collect(),
            ecus: v
                .ecus
                .into_iter()
                .map(|(k, e)| (k, Ecu { hw: e.hw, sw: e.sw }))
                .collect(),
            last_seen: v.last_seen.as_ref().map(from_timestamp),
            created_at: v
                .created_at
                .as_ref()
                .map(from_timestamp)
                .unwrap_or_default(),
            updated_at: v
                .updated_at
                .as_ref()
                .map(from_timestamp)
                .unwrap_or_default(),
            provenance: v.provenance.into_iter().collect(),
            provenance_at: v
                .provenance_at
                .iter()
                .map(|(k, t)| (k.clone(), from_timestamp(t)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_ndjson_line() {
        let line = r#"{"vin":"WVWZZZE1ZMP000001","model":"ID.4","model_year":2023,"platform":"MEB","gateway":"hcp3","protocol":"mqtt","region":"EU","country":"DE","tags":["fleet-a"],"attributes":{"color":"blue","seats":5,"ev":true},"ecus":{"BMS":{"hw":"H2","sw":"2.2.0"},"HU":{"hw":"MIB3","sw":"5.1.0"}}}"#;
        let p: VehiclePatch = serde_json::from_str(line).unwrap();
        assert_eq!(p.validate().unwrap().as_str(), "WVWZZZE1ZMP000001");
        assert_eq!(p.attributes["seats"], "5");
        assert_eq!(p.attributes["ev"], "true");
        assert_eq!(p.ecus["BMS"].sw.as_deref(), Some("2.2.0"));
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_named() {
        let err =
            serde_json::from_str::<VehiclePatch>(r#"{"vin":"WVWZZZE1ZMP000001","modle":"x"}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("unknown field `modle`"), "{err}");
        let err = serde_json::from_str::<VehiclePatch>(
            r#"{"vin":"WVWZZZE1ZMP000001","model_year":"new"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("invalid type: string \"new\""), "{err}");
        let err = serde_json::from_str::<VehiclePatch>(
            r#"{"vin":"WVWZZZE1ZMP000001","attributes":{"a":[1]}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("attribute \"a\" must be a string"), "{err}");
    }

    #[test]
    fn validate_names_the_offending_value() {
        let mut p = VehiclePatch {
            vin: "WVWZZZE1ZMP000001".into(),
            model_year: Some(1850),
            ..Default::default()
        };
        assert_eq!(
            p.validate().unwrap_err(),
            "model_year 1850 is out of range 1900..=2100"
        );
        p.model_year = None;
        p.ecus.insert("B MS".into(), EcuPatch::default());
        assert!(p.validate().unwrap_err().starts_with("ecu name \"B MS\""));
    }

    #[test]
    fn a_long_bad_name_is_clipped_in_the_message() {
        let mut p = VehiclePatch {
            vin: "WVWZZZE1ZMP000001".into(),
            ..Default::default()
        };
        p.attributes.insert("k".repeat(10_000), "v".into());
        let err = p.validate().unwrap_err();
        assert!(err.starts_with("attribute name \"kkk"), "{err}");
        assert!(err.len() < 200, "{} bytes", err.len());
    }

    #[test]
    fn the_merged_record_may_not_grow_past_a_bound() {
        let now = Utc::now();
        let mut v = Vehicle::new("WVWZZZE1ZMP000001", now);
        for i in 0..MAX_ATTRIBUTES {
            v.attributes.insert(format!("a{i}"), "x".into());
        }
        assert_eq!(v.check_bounds(None), Ok(()), "at the bound is within it");
        let before = v.clone();
        v.attributes.insert("one-more".into(), "x".into());
        assert_eq!(
            v.check_bounds(Some(&before)),
            Err(BoundExceeded {
                field: "attributes",
                count: MAX_ATTRIBUTES + 1,
                limit: MAX_ATTRIBUTES
            })
        );
        // A record stored past the bound before it existed keeps working,
        // as long as it does not grow.
        let legacy = v.clone();
        v.attributes.insert("a0".into(), "changed".into());
        assert_eq!(v.check_bounds(Some(&legacy)), Ok(()));
        v.ecus = (0..=MAX_ECUS)
            .map(|i| (format!("E{i}"), Ecu::default()))
            .collect();
        assert_eq!(v.check_bounds(Some(&legacy)).unwrap_err().field, "ecus");
    }

    #[test]
    fn patch_survives_the_proto_round_trip_including_empty_tags() {
        let p = VehiclePatch {
            vin: "WVWZZZE1ZMP000001".into(),
            model: Some("ID.4".into()),
            tags: Some(vec![]),
            ecus: [(
                "BMS".to_string(),
                EcuPatch {
                    hw: None,
                    sw: Some("1.0".into()),
                },
            )]
            .into(),
            ..Default::default()
        };
        let back = VehiclePatch::from(pb::Vehicle::from(p.clone()));
        assert_eq!(back, p);
        let untouched = VehiclePatch::from(pb::Vehicle::from(VehiclePatch {
            vin: p.vin.clone(),
            ..Default::default()
        }));
        assert_eq!(untouched.tags, None);
    }
}
