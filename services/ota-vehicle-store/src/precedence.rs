//! Per-field source precedence: which source's word wins for which field.
//!
//! Every field a source writes is recorded in the vehicle's provenance map
//! (field path to source). A later write from source S replaces the value only
//! when S ranks at least as high as the source recorded for that field, so a
//! manufacturing re-import never rolls back the software version a vehicle
//! reported about itself.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ota_common::vehicle::{Vehicle, VehiclePatch};
use serde::{Deserialize, Serialize};

/// Field groups that can be given their own order.
pub const FIELD_GROUPS: [&str; 11] = [
    "model",
    "model_year",
    "platform",
    "gateway",
    "protocol",
    "region",
    "country",
    "tags",
    "attributes",
    "ecu_hw",
    "ecu_sw",
];

/// Source names, highest precedence first. Sources not listed rank below all
/// listed ones; between equals the later write wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Precedence {
    pub default: Vec<String>,
    /// Overrides for single field groups (see [`FIELD_GROUPS`]).
    #[serde(flatten)]
    pub fields: BTreeMap<String, Vec<String>>,
}

pub use ota_common::vehicle::{INSTALL_SOURCE, VEHICLE_SOURCE};

impl Default for Precedence {
    fn default() -> Self {
        let vehicle_first = vec![
            "vehicle".to_owned(),
            "manufacturing".to_owned(),
            "dealer".to_owned(),
            "api".to_owned(),
        ];
        Self {
            default: vec![
                "manufacturing".into(),
                "dealer".into(),
                "api".into(),
                "vehicle".into(),
            ],
            fields: [
                ("ecu_sw".to_owned(), vehicle_first.clone()),
                ("ecu_hw".to_owned(), vehicle_first),
            ]
            .into(),
        }
    }
}

impl Precedence {
    /// Checks the configuration; errors name the offending key.
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        for key in self.fields.keys() {
            if !FIELD_GROUPS.contains(&key.as_str()) {
                return Err(format!(
                    "{prefix}.{key}: unknown field group, expected one of {}",
                    FIELD_GROUPS.join(", ")
                ));
            }
        }
        for (key, list) in std::iter::once(("default", &self.default))
            .chain(self.fields.iter().map(|(k, v)| (k.as_str(), v)))
        {
            for s in list {
                validate_source(s).map_err(|e| format!("{prefix}.{key}: {e}"))?;
            }
        }
        Ok(())
    }

    fn rank(&self, group: &str, source: &str) -> usize {
        let list = self.fields.get(group).unwrap_or(&self.default);
        // A finished install is the vehicle saying what it now runs, through
        // its status report: it ranks as the vehicle's own reports, so the
        // later of the two wins, while provenance still tells them apart.
        let source = if source == INSTALL_SOURCE {
            VEHICLE_SOURCE
        } else {
            source
        };
        list.iter().position(|s| s == source).unwrap_or(list.len())
    }

    /// May `source` overwrite a field whose current value came from `current`?
    pub fn wins(&self, group: &str, source: &str, current: Option<&str>) -> bool {
        current.is_none_or(|cur| self.rank(group, source) <= self.rank(group, cur))
    }
}

pub fn validate_source(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid source {s:?}: use 1-32 characters of a-z, 0-9, _ and -"
        ))
    }
}

/// Result of merging one patch into one vehicle.
pub struct Merged {
    pub vehicle: Vehicle,
    pub created: bool,
    pub changed: bool,
    /// The vehicle as it was (None: it is new), for a caller that refuses
    /// the result.
    pub before: Option<Vehicle>,
}

/// Applies what `source` says in `patch` to `current` (None: a new vehicle).
pub fn merge(
    current: Option<Vehicle>,
    patch: &VehiclePatch,
    source: &str,
    prec: &Precedence,
    now: DateTime<Utc>,
) -> Merged {
    let created = current.is_none();
    let mut v = current.unwrap_or_else(|| Vehicle::new(&patch.vin, now));
    let before = (!created).then(|| v.clone());
    let (prov, prov_at) = (&mut v.provenance, &mut v.provenance_at);
    // Whether `source` may write `path`; when it may and the value or the
    // source changes (`differs`: the value does), the field's time is now.
    let mut claim = |path: &str, group: &str, differs: bool| -> bool {
        let ok = prec.wins(group, source, prov.get(path).map(String::as_str));
        if ok && prov.get(path).map(String::as_str) != Some(source) {
            prov.insert(path.to_owned(), source.to_owned());
            prov_at.insert(path.to_owned(), now);
        } else if ok && differs {
            prov_at.insert(path.to_owned(), now);
        }
        ok
    };

    macro_rules! scalar {
        ($($field:ident),*) => {$(
            if let Some(val) = &patch.$field {
                let differs = v.$field.as_ref() != Some(val);
                if claim(stringify!($field), stringify!($field), differs) {
                    v.$field = Some(val.clone());
                }
            }
        )*};
    }
    scalar!(model, model_year, platform, gateway, protocol, region, country);
    if let Some(tags) = &patch.tags {
        if claim("tags", "tags", &v.tags != tags) {
            v.tags = tags.clone();
        }
    }
    for (k, val) in &patch.attributes {
        let differs = v.attributes.get(k) != Some(val);
        if claim(&format!("attributes.{k}"), "attributes", differs) {
            v.attributes.insert(k.clone(), val.clone());
        }
    }
    for (name, ecu) in &patch.ecus {
        let now_ecu = v.ecus.get(name);
        let hw_differs = now_ecu.map(|e| &e.hw) != ecu.hw.as_ref();
        let sw_differs = now_ecu.map(|e| &e.sw) != ecu.sw.as_ref();
        let hw_ok = ecu.hw.is_some() && claim(&format!("ecus.{name}.hw"), "ecu_hw", hw_differs);
        let sw_ok = ecu.sw.is_some() && claim(&format!("ecus.{name}.sw"), "ecu_sw", sw_differs);
        if hw_ok || sw_ok || !v.ecus.contains_key(name) {
            let slot = v.ecus.entry(name.clone()).or_default();
            if hw_ok {
                slot.hw = ecu.hw.clone().unwrap_or_default();
            }
            if sw_ok {
                slot.sw = ecu.sw.clone().unwrap_or_default();
            }
        }
    }
    let changed = before.as_ref() != Some(&v);
    if changed && !created {
        v.updated_at = now;
    }
    Merged {
        vehicle: v,
        created,
        changed,
        before,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ota_common::vehicle::EcuPatch;

    const VIN: &str = "WVWZZZE1ZMP000001";

    fn patch(model: &str, sw: &str) -> VehiclePatch {
        VehiclePatch {
            vin: VIN.into(),
            model: Some(model.into()),
            ecus: [(
                "BMS".to_owned(),
                EcuPatch {
                    hw: Some("H2".into()),
                    sw: Some(sw.into()),
                },
            )]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn vehicle_self_report_wins_for_ecu_software_but_not_for_model() {
        let p = Precedence::default();
        let now = Utc::now();
        let m = merge(None, &patch("ID.4", "2.2.0"), "manufacturing", &p, now);
        assert!(m.created);
        let m = merge(
            Some(m.vehicle),
            &patch("ID.4 GTX", "2.3.1"),
            "vehicle",
            &p,
            now,
        );
        assert_eq!(
            m.vehicle.model.as_deref(),
            Some("ID.4"),
            "manufacturing owns model"
        );
        assert_eq!(m.vehicle.ecus["BMS"].sw, "2.3.1", "vehicle owns ecu sw");
        assert_eq!(m.vehicle.provenance["ecus.BMS.sw"], "vehicle");
        let m = merge(
            Some(m.vehicle),
            &patch("ID.4", "2.2.0"),
            "manufacturing",
            &p,
            now,
        );
        assert_eq!(
            m.vehicle.ecus["BMS"].sw, "2.3.1",
            "re-import does not roll back"
        );
        assert!(!m.changed);
    }

    #[test]
    fn a_field_keeps_the_time_its_value_or_source_was_set() {
        let p = Precedence::default();
        let t = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let m = merge(None, &patch("ID.4", "2.2.0"), "manufacturing", &p, t(100));
        assert_eq!(m.vehicle.provenance_at["model"], t(100));
        assert_eq!(m.vehicle.provenance_at["ecus.BMS.sw"], t(100));
        // The same values again: nothing was set, nothing changed.
        let m = merge(
            Some(m.vehicle),
            &patch("ID.4", "2.2.0"),
            "manufacturing",
            &p,
            t(200),
        );
        assert!(!m.changed);
        assert_eq!(m.vehicle.provenance_at["model"], t(100));
        // A new value moves only its own field's time.
        let m = merge(
            Some(m.vehicle),
            &patch("ID.4", "2.3.0"),
            "manufacturing",
            &p,
            t(300),
        );
        assert_eq!(m.vehicle.provenance_at["ecus.BMS.sw"], t(300));
        assert_eq!(m.vehicle.provenance_at["model"], t(100));
        // The same value from a source that outranks the current one: the
        // source changed, so did the time.
        let m = merge(
            Some(m.vehicle),
            &patch("ID.4", "2.3.0"),
            "vehicle",
            &p,
            t(400),
        );
        assert_eq!(m.vehicle.provenance["ecus.BMS.sw"], "vehicle");
        assert_eq!(m.vehicle.provenance_at["ecus.BMS.sw"], t(400));
        // A source that loses sets nothing.
        let m = merge(
            Some(m.vehicle),
            &patch("ID.4", "9.9.9"),
            "manufacturing",
            &p,
            t(500),
        );
        assert_eq!(m.vehicle.provenance_at["ecus.BMS.sw"], t(400));
    }

    #[test]
    fn a_finished_install_ranks_as_the_vehicle_and_the_later_one_wins() {
        let p = Precedence::default();
        let now = Utc::now();
        let m = merge(None, &patch("ID.4", "2.2.0"), "vehicle", &p, now);
        let m = merge(
            Some(m.vehicle),
            &patch("ID.4", "2.3.1"),
            INSTALL_SOURCE,
            &p,
            now,
        );
        assert_eq!(
            m.vehicle.ecus["BMS"].sw, "2.3.1",
            "install after the vehicle's report"
        );
        assert_eq!(m.vehicle.provenance["ecus.BMS.sw"], "install");
        let m = merge(
            Some(m.vehicle),
            &patch("ID.4", "2.2.0"),
            "manufacturing",
            &p,
            now,
        );
        assert_eq!(
            m.vehicle.ecus["BMS"].sw, "2.3.1",
            "a re-import does not roll it back"
        );
        let m = merge(Some(m.vehicle), &patch("ID.4", "2.3.0"), "vehicle", &p, now);
        assert_eq!(
            m.vehicle.ecus["BMS"].sw, "2.3.0",
            "the vehicle's later report wins"
        );
    }

    #[test]
    fn unlisted_sources_rank_last_and_equal_sources_overwrite() {
        let p = Precedence::default();
        assert!(p.wins("model", "telematics", None));
        assert!(!p.wins("model", "telematics", Some("dealer")));
        assert!(p.wins("model", "telematics", Some("telematics")));
        assert!(p.wins("model", "dealer", Some("dealer")));
    }

    #[test]
    fn absent_fields_never_clear_values() {
        let p = Precedence::default();
        let now = Utc::now();
        let m = merge(None, &patch("ID.4", "1.0"), "dealer", &p, now);
        let empty = VehiclePatch {
            vin: VIN.into(),
            ..Default::default()
        };
        let m = merge(Some(m.vehicle), &empty, "manufacturing", &p, now);
        assert!(!m.changed);
        assert_eq!(m.vehicle.model.as_deref(), Some("ID.4"));
    }

    #[test]
    fn validation_names_the_bad_key() {
        let mut p = Precedence::default();
        p.fields.insert("ecu_fw".into(), vec!["vehicle".into()]);
        let err = p.validate("vehicle_store.precedence").unwrap_err();
        assert!(
            err.starts_with("vehicle_store.precedence.ecu_fw: unknown field group"),
            "{err}"
        );
        let mut p = Precedence::default();
        p.default.push("Bad Source".into());
        let err = p.validate("vehicle_store.precedence").unwrap_err();
        assert!(
            err.starts_with("vehicle_store.precedence.default: invalid source \"Bad Source\""),
            "{err}"
        );
    }
}
