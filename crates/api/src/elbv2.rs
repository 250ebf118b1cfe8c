//! Elastic Load Balancing v2's shapes, generated at build time from botocore's model (see
//! `build.rs`). Its requests arrive in the Query protocol ([`crate::query`] turns them into
//! JSON first) and its answers leave as XML.
#![allow(missing_docs, clippy::all)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::{from_body, join, ParseError, Shape};

include!(concat!(env!("OUT_DIR"), "/elbv2.rs"));

impl Action {
    /// The target groups this action forwards to: `TargetGroupArn`, then those of its
    /// `ForwardConfig`, each once, in that order.
    pub fn forwarded_groups(&self) -> Vec<String> {
        let mut out: Vec<String> = self.target_group_arn.iter().cloned().collect();
        let weighted = self
            .forward_config
            .as_ref()
            .and_then(|f| f.target_groups.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|t| t.target_group_arn.as_ref());
        for arn in weighted {
            if !out.contains(arn) {
                out.push(arn.clone());
            }
        }
        out
    }
}

/// The vendored botocore model, read by the Query codec at run time.
pub const MODEL: &str = include_str!("../models/elbv2-2015-12-01.json");

/// The model, parsed once.
pub fn model() -> &'static serde_json::Value {
    static MODEL_VALUE: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    MODEL_VALUE.get_or_init(|| serde_json::from_str(MODEL).unwrap_or(serde_json::Value::Null))
}
