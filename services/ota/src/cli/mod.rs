pub mod audit;
pub mod campaigns;
pub mod packages;
pub mod rules;
pub mod staging;
pub mod status;
pub mod tokens;
pub mod vehicles;
