//! EC2's shapes (the VPC part Berth serves), generated at build time from botocore's model (see
//! `build.rs`). Its requests arrive in EC2's variant of the Query protocol ([`crate::query`]
//! turns them into JSON first) and its answers leave as XML.
#![allow(missing_docs, clippy::all)]

use serde::{Deserialize, Serialize};
#[allow(unused_imports)]
use std::collections::BTreeMap;

use crate::{from_body, join, ParseError, Shape};

include!(concat!(env!("OUT_DIR"), "/ec2.rs"));

/// The vendored botocore model, read by the Query codec at run time.
pub const MODEL: &str = include_str!("../models/ec2-2016-11-15.json");

/// The model, parsed once.
pub fn model() -> &'static serde_json::Value {
    static MODEL_VALUE: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    MODEL_VALUE.get_or_init(|| serde_json::from_str(MODEL).unwrap_or(serde_json::Value::Null))
}
