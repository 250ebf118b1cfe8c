//! Reconcilers as pure functions: the desired state, the observed state and `now` in; the
//! actions that move one toward the other out. No IO, no clock: the control plane reads the
//! store, calls [`service::reconcile`], and applies what comes back.

pub mod daemon;
pub mod service;
