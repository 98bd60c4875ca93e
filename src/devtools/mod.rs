//! Test and quickstart fixtures. Not part of Berth's public API.
//!
//! - [`fixtures`]: the fixture images (built from the static busybox, pushed
//!   to the registries `tests/devenv.sh` runs).
//! - [`pg`]: the dev PostgreSQL and a database per test.

pub mod fixtures;
pub mod pg;
