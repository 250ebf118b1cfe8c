//! Berth's pure domain model: what a cluster, a task definition and an ARN *are*, and the
//! rules ECS applies to them, with no JSON, HTTP, tokio or storage in sight.
//!
//! Start with [`task_definition`]: [`task_definition::TaskDefinitionSpec`] is the typed view of a
//! task definition that validation (and later placement) reasons about; [`arn`] builds and parses
//! ECS's long-format ARNs; [`units`] parses ECS's cpu and memory strings.

pub mod arn;
pub mod cidr;
pub mod fargate;
pub mod names;
pub mod status;
pub mod tags;
pub mod task_definition;
pub mod units;

mod error;
pub use error::{Invalid, InvalidKind};
