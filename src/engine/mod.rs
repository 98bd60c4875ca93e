//! The declarative core. `AppSpec` is the desired state; containers with
//! Berth's labels on the hosts (and the routes their ingress holds) are the
//! observed state. `plan` is pure and explains every step in words;
//! `deploy` (locking, planning, journaling) and `rollout` (ROLL, SWITCH,
//! MONITOR, DRAIN, STOP) execute a plan through the `docker`, `ingress`
//! and `store` layers as the state machine in DESIGN.md describes.

pub mod apps;
pub mod deploy;
pub mod hooks;
pub mod jobs;
pub mod plan;
pub mod probe;
mod rollout;
pub mod runtime;
pub mod schedule;
pub mod scheduler;
pub mod spec;
pub mod swarm;
mod swarm_runtime;

pub use apps::{Apps, AppsError, DeployRequest, Record};
pub use deploy::{DeployError, Engine, Outcome, Target};
pub use runtime::Runtime;
