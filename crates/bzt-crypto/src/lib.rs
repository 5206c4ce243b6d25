//! Cryptography shared by every party of `bzt`: the broker, the phone, the
//! co-signing service, the envelope and the development CA.
//!
//! This crate is the bottom of the workspace: it imports no other `bzt-*`
//! crate, and every concern it holds has exactly one home here.

#[cfg(test)]
mod sm2_crosscheck;
pub mod sm2_field;
pub mod sm2_point;
pub mod sm2_verify;
