//! Load generator for the bzt broker. `bzt-load <scenario>` drives the real
//! broker binary over loopback; see loadtest/RESULTS.md.

pub mod broker;
pub mod conversation;
pub mod cosign;
pub mod flows;
pub mod idle;
pub mod refs;
pub mod report;
pub mod stats;
