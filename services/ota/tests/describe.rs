//! `infra/ota-describe.json` is what `ota describe` prints: the infra
//! tests compare the Terraform stack's roles and variables with that file,
//! and this test keeps the file equal to the binary. After changing a role
//! or a setting, regenerate it with `ota describe > infra/ota-describe.json`.

mod common;

use std::process::Command;

#[test]
fn the_checked_in_contract_is_the_binarys() {
    let out = Command::new(common::OTA).arg("describe").output().unwrap();
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/ota-describe.json");
    let checked_in: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        printed, checked_in,
        "infra/ota-describe.json is out of date: run `ota describe > infra/ota-describe.json`"
    );
    // Every role and peer is there; the settings are read under these names.
    let env: Vec<&str> = printed["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for key in [
        "OTA_PUBLIC_URL",
        "OTA_HTTP__MAX_CONNECTIONS",
        "OTA_PEERS__STAGING",
    ] {
        assert!(env.contains(&key), "{key} in {env:?}");
    }
    assert_eq!(printed["roles"].as_array().unwrap().len(), 7);
}
