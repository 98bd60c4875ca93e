//! The declarative core. `AppSpec` is the desired state; containers with
//! Berth's labels on the hosts are the observed state. `plan` is pure and
//! explains every step in words; `deploy` executes a plan through the
//! `docker`, `registry` and `store` layers as the state machine in
//! DESIGN.md describes.

pub mod deploy;
pub mod plan;
pub mod probe;
pub mod spec;

pub use deploy::{DeployError, Engine, Outcome, Target};
