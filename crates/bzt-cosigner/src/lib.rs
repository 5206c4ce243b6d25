//! The co-signing service for split SM2 keys (密钥拆分), its wire types and
//! the phone's client.
//!
//! - [`wire`]: the HTTP API's request and answer types, once for both sides.
//! - [`client::CosignerClient`]: what the phone uses (enrol, sign, decrypt).
//!
//! The mathematics is `bzt_crypto::two_party`; see docs/key-splitting.md.

pub mod client;
pub mod wire;

pub use client::{ClientError, CosignerClient, Enrollment, SplitKeyFile};

pub mod config;
pub mod context;
pub mod error;
pub mod grant_routes;
pub mod grants;
pub mod sealing;
pub mod server;
pub mod store;

pub use config::Config;
pub use server::{router, run, serve_on, Service};

/// Runs the service on `config.listen` (what `bzt cosigner serve` calls).
pub async fn serve(config: Config) -> anyhow::Result<()> {
    server::serve(config).await
}
