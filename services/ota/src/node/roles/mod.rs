//! One module per role of `ota serve --services`.

pub mod campaign_manager;
pub mod http_adapter;
pub mod mqtt_adapter;
pub mod rest;
pub mod rule_engine;
pub mod staging;
pub mod vehicle_store;
