//! Berth deploys prebuilt container images ("apps") onto your own amd64
//! Docker hosts, driven declaratively by Terraform/OpenTofu (the
//! `terraform-provider-berth` binary) or by the `berth` command.
//!
//! Layout (dependencies point one way, see `ARCHITECTURE.md`):
//!
//! - [`reference`]: parse, validate and normalize image references. Pure.
//! - [`registry`]: the only code that talks to registries (resolve a tag to
//!   the linux/amd64 digest, check platform and size, authenticate).
//! - [`provider`]: Terraform's view: schemas, typed values, diagnostics, the
//!   `berth_image` data source and the provider functions.
//! - [`tfplugin`]: the protocol adapter only (tfplugin6 over gRPC, the
//!   go-plugin handshake, mTLS, logging).
//! - [`cli`]: the `berth` command, thin over the library.
//! - [`devtools`]: fixture images for tests and the quickstart; not part of
//!   the public API.

pub mod cli;
pub mod devtools;
pub mod docker;
pub mod engine;
pub mod hooks;
pub mod ingress;
pub mod labels;
pub mod provider;
pub mod reference;
pub mod registry;
pub mod store;
pub mod tfplugin;
