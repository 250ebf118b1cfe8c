//! CloudWatch Logs' JSON 1.1 shapes, generated at build time from botocore's model (see `build.rs`).
//!
//! Every member is optional here, as on the wire: required members are checked by
//! [`crate::check_required`] so the error can name them the way ECS does.
#![allow(missing_docs, clippy::all)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::{from_body, join, ParseError, Shape};

include!(concat!(env!("OUT_DIR"), "/logs.rs"));
