//! The proxy (data plane): the last stage of the flow. It reads credentials
//! from the store and attaches them to the job's requests that match a
//! route. So far this holds the pure, hostile-tested core: the canonical
//! destination parse and route matcher (`routes`) and header injection
//! (`inject`). The listener is not built yet.

pub mod inject;
pub mod routes;
