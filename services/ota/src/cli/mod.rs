pub mod tokens;
pub mod vehicles;
