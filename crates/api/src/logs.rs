//! CloudWatch Logs' JSON 1.1 shapes, generated at build time from botocore's model (see `build.rs`).
//!
//! Every member is optional here, as on the wire: required members are checked by
//! [`crate::check_required`] so the error can name them the way ECS does.
#![allow(missing_docs, clippy::all)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::{from_body, join, ParseError, Shape};

include!(concat!(env!("OUT_DIR"), "/logs.rs"));

/// The log stream the awslogs driver writes a container's output to, as ECS names it:
/// `awslogs-stream` when given, else `PREFIX/CONTAINER/TASK_ID` with `awslogs-stream-prefix`,
/// else (as Docker does) the container's id, when known. One rule for the agent that writes
/// the stream and the tools that read it.
pub fn awslogs_stream(
    options: &BTreeMap<String, String>,
    container: &str,
    task_id: &str,
    container_id: Option<&str>,
) -> Option<String> {
    match (
        options.get("awslogs-stream"),
        options.get("awslogs-stream-prefix"),
    ) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(prefix)) => Some(format!("{prefix}/{container}/{task_id}")),
        (None, None) => container_id.map(str::to_string),
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    #[test]
    fn streams_are_named_as_ecs_names_them() {
        let o = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let both = o(&[("awslogs-stream", "fixed"), ("awslogs-stream-prefix", "p")]);
        assert_eq!(
            awslogs_stream(&both, "app", "t1", Some("cid")).as_deref(),
            Some("fixed")
        );
        let prefix = o(&[("awslogs-stream-prefix", "ecs")]);
        assert_eq!(
            awslogs_stream(&prefix, "app", "t1", Some("cid")).as_deref(),
            Some("ecs/app/t1")
        );
        assert_eq!(
            awslogs_stream(&o(&[]), "app", "t1", Some("cid")).as_deref(),
            Some("cid")
        );
        assert_eq!(awslogs_stream(&o(&[]), "app", "t1", None), None);
    }
}
