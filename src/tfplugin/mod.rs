//! The Terraform plugin protocol adapter: tfplugin6 over gRPC, the go-plugin
//! handshake and mTLS, logging to stderr. Each RPC decodes, dispatches to
//! [`crate::provider`], and encodes; no business rule lives here.

pub mod convert;
pub mod logging;
pub mod proto;
pub mod server;
pub mod service;
pub mod value;
