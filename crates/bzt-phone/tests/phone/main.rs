//! Phone library tests that need more than one module: OpenSSL cross-checks and a mock broker.
//! One binary, so the fixtures compile once.

mod broker;
mod common;
mod conversation;
mod identity;
