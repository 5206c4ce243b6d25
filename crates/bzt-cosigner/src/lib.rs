//! The co-signing service for split SM2 keys (密钥拆分), its wire types and
//! the phone's client.
//!
//! - [`wire`]: the HTTP API's request and answer types, once for both sides.
//! - [`client::CosignerClient`]: what the phone uses (enrol, sign, decrypt).
//!
//! The mathematics is `bzt_crypto::two_party`; see docs/key-splitting.md.

pub mod client;
pub mod wire;

pub use client::{ClientError, CosignerClient, Enrollment};
