//! Cryptography shared by every party of `bzt`: the broker, the phone, the
//! co-signing service, the envelope and the development CA.
//!
//! This crate is the bottom of the workspace: it imports no other `bzt-*`
//! crate, and every concern it holds has exactly one home here.
//!
//! - [`two_party`]: two-party SM2 (密钥拆分): key generation with proofs of
//!   knowledge, co-signing, blinded co-decryption, the phone's PIN-masked
//!   share and PIN proof, and the channel encryption between phone and
//!   co-signing service.

pub mod two_party;
