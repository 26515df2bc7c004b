#![forbid(unsafe_code)]
//! lanyard: a per-job credential sidecar for CI.
//!
//! Flow (one way): `identity` → `exchange` → `store` → proxy; `audit` is a
//! sink. `config` is read first and builds the `route` model the proxy
//! matches against, `app` wires the stages, `cli` is the edge.

pub(crate) mod accept;
pub mod app;
pub mod audit;
pub mod cli;
pub mod command;
pub mod config;
pub mod daemon;
pub mod discovery;
pub mod doctor;
pub mod env;
pub mod exchange;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod identity;
pub mod login_cmd;
pub mod outbound;
pub mod proxy;
pub mod route;
pub mod run;
pub mod secret;
pub mod session;
pub mod store;
pub mod wipe;
