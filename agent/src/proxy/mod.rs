//! The proxy (data plane): the last stage of the flow. It reads credentials
//! from the store and attaches them to the job's requests that match a
//! route (`crate::route`), and to nothing else.
//!
//! One request, from the listener to the upstream, in the order it runs:
//! - `listener`: each worker's accept loop (backs off on accept errors,
//!   ends on cancellation), the connection (same-user check, then hyper
//!   behind the strict request gate), TLS interception for a routed
//!   `CONNECT`; every request goes to `phase::handle`;
//! - `phase::admit`: the job's user, no browser page, the proxy secret;
//! - `phase::resolve`: forward, reverse or `CONNECT` → one canonical
//!   destination; the self-loop check;
//! - `phase::decide`: route, path, method, identity, WebSocket, egress;
//! - `phase::attach`: the upstream head and the credential; cloud
//!   placeholders swapped for the real credential, or refused elsewhere;
//! - `phase::sign`: AWS routes only, SigV4 afresh with the real keys
//!   (`sigv4`);
//! - `phase::forward`: pool, deadlines, 401 refresh and replay; blind
//!   tunnels.
//!
//! Each phase returns `Result<_, Refusal>` (`refusal`: who refused, the
//! rule, whether the connection closes; one function answers it). The
//! request's `context` carries its audit record, a drop guard written
//! exactly once.
//!
//! Beside the phases, right after `admit`, the local SDK credential
//! endpoints on the listener (`local_endpoint`): `aws_container` (AWS
//! container credentials, opt-in per credential), `azure_mi` (Azure
//! managed identity, placeholder tokens) and `gce_metadata` (a GCE metadata
//! server, placeholder tokens).
//!
//! Below the phases:
//! - `inject`: replace-never-merge header injection;
//! - `tls`: the per-job CA and per-host leaf certificates;
//! - `peer`: who owns the connecting socket (Linux);
//! - `framing`: the strict HTTP/1.1 request gate in front of hyper;
//! - `body`: request bodies read (up to a bound) before going upstream;
//! - `conn`: a client connection's IO (through the gate) and its service;
//! - `conn_timer`: the header-read timeout on one timer per connection;
//! - `deadline`: how long an upstream may take (head, total, rate);
//! - `forward`: hop-by-hop headers, byte counts, the audit guard;
//! - `pool`: each worker thread's upstream connections;
//! - `server`: the proxy's options, shared state, workers and teardown.

pub(crate) mod aws_container;
pub(crate) mod azure_mi;
pub mod body;
pub mod conn;
pub mod conn_timer;
pub(crate) mod context;
pub mod deadline;
pub mod forward;
pub mod framing;
pub(crate) mod gce_metadata;
pub mod inject;
pub(crate) mod listener;
pub(crate) mod local_endpoint;
pub mod peer;
pub(crate) mod phase;
pub mod pool;
pub mod refusal;
pub mod server;
pub mod sigv4;
pub mod tls;

pub use server::{Proxy, ProxyError, ProxyOptions};
