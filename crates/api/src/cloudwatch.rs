//! CloudWatch's (metrics) shapes, generated at build time from botocore's model (see
//! `build.rs`). They read JSON (what [`crate::cbor::decode`] makes of a CBOR body) and write
//! themselves as CBOR ([`crate::cbor::ToCbor`]) or JSON.
#![allow(missing_docs, clippy::all)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::{from_body, join, ParseError, Shape};

include!(concat!(env!("OUT_DIR"), "/cloudwatch.rs"));
