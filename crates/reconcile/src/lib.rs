//! Reconcilers as pure functions: the desired state, the observed state and `now` in; the
//! actions that move one toward the other out. No IO, no clock, no dependencies.
//!
//! Layout:
//! - [`deploy`]: one pass of the service reconciler. The control plane reads a service into a
//!   [`deploy::Input`], calls [`deploy::decide()`], applies the [`deploy::Decision`] (stops,
//!   starts), and writes what [`deploy::record()`] returns. Start here.
//! - [`service`]: the REPLICA rollout arithmetic (floor and ceiling), the circuit breaker
//!   threshold and the restart back-off.
//! - [`daemon`]: one task per eligible instance.

pub mod daemon;
pub mod deploy;
pub mod service;
