//! Test kit shared by every crate's tests: fresh databases on the real
//! PostgreSQL (one database per test, dropped afterwards) and temporary
//! SQLite files, the platform in-process on either (`platform`) with the
//! scenario steps tests share, a headless Chromium for page tests
//! (`browser`), a stand-in OpenTelemetry collector (`otlp`), plus the
//! end-to-end tests in `tests/` that start the `ota` binary as a process.
//!
//! PostgreSQL is found at `OTA_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). When it is not reachable
//! the tests fail with a message saying so: they never skip.

pub mod browser;
pub mod db;
pub mod otlp;
pub mod platform;
pub mod proxy;
