pub mod rules;
pub mod tokens;
pub mod vehicles;
