//! Integration tests of the envelope, built into one binary.
//!
//! They need the `openssl` CLI (3.x, with SM2) and `python3` with the `cryptography` package;
//! a missing tool fails the test that needs it, with a message saying what to install.

mod helpers;
mod interop;
mod roundtrip;
mod tamper;
