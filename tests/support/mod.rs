//! Test support shared by the Redis conformance suite and the multi-node
//! tests: throw-away Redis servers and clusters, broker processes.
#![allow(dead_code)]

pub mod nodes;
pub mod redis;
