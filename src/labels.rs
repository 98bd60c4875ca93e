//! The container labels Berth owns. Every key lives under `io.berth.`; code
//! anywhere else refers to these constants, never to the strings.

/// Prefix of every label Berth writes.
pub const PREFIX: &str = "io.berth.";
/// The app a container belongs to: `docker ps --filter label=io.berth.app=NAME`.
pub const APP: &str = "io.berth.app";
