//! Berth's load balancer data plane (`berth-elb`): what Elastic Load Balancing's listeners,
//! rules and target groups do once the API has stored them.
//!
//! - [`config`]: the whole configuration as pure data, built by the control plane from its
//!   records and handed to [`Proxy::apply`].
//! - [`rules`]: ALB's conditions and redirects, pure.
//! - [`health`]: ELB's target health states and reason codes, the matcher and the
//!   per-target state machine, pure.
//! - [`balance`]: which target (and which group of a weighted forward) gets a request, pure.
//! - [`proxy`]: the listeners on this host (hyper for HTTP/1.1, HTTP/2 and WebSocket
//!   upgrades, Tokio for TCP), the health checkers and the in-flight counts draining waits on.

pub mod balance;
pub mod config;
pub mod health;
pub mod proxy;
pub mod rules;

pub use config::{
    Action, Algorithm, Condition, Config, Group, HealthCheck, Listener, Protocol, Rule, Target,
};
pub use proxy::{Error, Options, Proxy};
