//! The proxy (data plane): the last stage of the flow. It reads credentials
//! from the store and attaches them to the job's requests that match a
//! route (`crate::route`), and to nothing else.
//! - `inject`: replace-never-merge header injection;
//! - `tls`: the per-job CA and per-host leaf certificates;
//! - `peer`: who owns the connecting socket (Linux);
//! - `framing`: the strict HTTP/1.1 request gate in front of hyper;
//! - `body`: request bodies read (up to a bound) before going upstream;
//! - `conn`: a client connection's IO (through the gate) and its service;
//! - `deadline`: how long an upstream may take (head, total, rate);
//! - `forward`: re-originating upstream, byte counts, the audit record;
//! - `pool`: each worker thread's upstream connections;
//! - `server`: the listener and the request pipeline.

pub mod body;
pub mod conn;
pub mod deadline;
pub mod forward;
pub mod framing;
pub mod inject;
pub mod peer;
pub mod pool;
pub mod server;
pub mod tls;

pub use server::{Proxy, ProxyError, ProxyOptions};
