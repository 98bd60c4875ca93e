//! Generated protocol types (from `proto/`, by `build.rs`).

#![allow(clippy::all, missing_docs)]

/// tfplugin6: the Terraform provider protocol, version 6.8.
pub mod tfplugin6 {
    tonic::include_proto!("tfplugin6");
}

/// go-plugin's controller service (Shutdown).
pub mod plugin {
    tonic::include_proto!("plugin");
}
