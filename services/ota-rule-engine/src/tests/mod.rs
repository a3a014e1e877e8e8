//! Behaviour of the crate through its public API, with shared fixtures.

mod agreement;
mod evaluate;
mod limits;
mod validate;

use chrono::{TimeZone, Utc};
use ota_common::vehicle::{Ecu, Vehicle};

use crate::{ExpressionError, Rule, RuleSet};

pub(crate) fn rule_set(target: &str, rules: &[(&str, &str)]) -> RuleSet {
    RuleSet {
        target: target.to_owned(),
        rules: rules
            .iter()
            .map(|(when, action)| Rule {
                when: (*when).to_owned(),
                action: (*action).to_owned(),
            })
            .collect(),
    }
}

pub(crate) fn target_errors(target: &str) -> Vec<ExpressionError> {
    crate::validate(&rule_set(target, &[]))
}

/// The single error of a target, which must have exactly one.
#[track_caller]
pub(crate) fn one_error(target: &str) -> ExpressionError {
    let mut errors = target_errors(target);
    assert_eq!(errors.len(), 1, "{target}: {errors:#?}");
    errors.remove(0)
}

fn ecu(hw: &str, sw: &str) -> Ecu {
    Ecu {
        hw: hw.into(),
        sw: sw.into(),
    }
}

/// A vehicle with every field set.
pub(crate) fn id4() -> Vehicle {
    let mut v = Vehicle::new(
        "WVWZZZE1ZMP000001",
        Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
    );
    v.model = Some("ID.4".into());
    v.model_year = Some(2023);
    v.platform = Some("MEB".into());
    v.gateway = Some("hcp3".into());
    v.protocol = Some("mqtt".into());
    v.region = Some("EU".into());
    v.country = Some("DE".into());
    v.tags = vec!["fleet-a".into()];
    v.attributes.insert("color".into(), "blue".into());
    v.ecus.insert("BMS".into(), ecu("H2", "2.2.0"));
    v.ecus.insert("HU".into(), ecu("MIB3", "5.1.0"));
    v.last_seen = Some(Utc.timestamp_opt(1_720_000_000, 0).unwrap());
    v
}

/// A vehicle that only has a VIN.
pub(crate) fn bare() -> Vehicle {
    Vehicle::new(
        "WVWZZZE1ZMP000002",
        Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
    )
}

pub(crate) fn test_fleet_id3() -> Vehicle {
    let mut v = id4();
    v.vin = "WVWZZZE1ZMP000003".into();
    v.model = Some("ID.3".into());
    v.model_year = Some(2021);
    v.gateway = Some("icas1".into());
    v.region = Some("NA".into());
    v.country = Some("US".into());
    v.tags = vec!["test-fleet".into(), "fleet-b".into()];
    v.ecus.insert("BMS".into(), ecu("H3", "2.10.0"));
    v.ecus.remove("HU");
    v.last_seen = None;
    v
}

pub(crate) fn unusual() -> Vehicle {
    let mut v = id4();
    v.vin = "WVWZZZE1ZMP000004".into();
    v.model = Some("Ünïcode".into());
    v.ecus.insert("BMS".into(), ecu("", "1.0.0-rc1"));
    v.attributes.insert("color".into(), "red".into());
    v.attributes.insert("seats".into(), "5".into());
    v
}

pub(crate) fn fleet() -> Vec<Vehicle> {
    vec![id4(), bare(), test_fleet_id3(), unusual()]
}
