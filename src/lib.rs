//! `bzt`: a QR scan-session broker with WebSocket push for e-bidding (招投标)
//! platforms.
//!
//! The domain rules live in the `bzt-core` crate (sessions, state machine,
//! challenge bytes, certificate and signature checks). This crate puts them
//! on the network:
//!
//! - [`broker`]: the use cases (create, claim, complete, cancel, wait,
//!   conversations, revocations), the one place that reacts to state
//!   transitions.
//! - [`store`]: where sessions and conversations live, behind the
//!   [`store::RecordStore`] trait ([`store::memory`] for one node).
//! - [`http`]: axum routes for the RP backend, the browser (WebSocket, SSE,
//!   QR images) and the phone; [`http::events`] derives the browser's events
//!   from session state.
//! - [`timers`], [`clock`]: expiry and rotation without scanning sessions,
//!   against an injectable clock.
//! - [`webhook`], [`http::limits`], [`http::qr`]: signed webhooks, abuse limits,
//!   QR images.
//! - [`config`], [`app`]: configuration, start-up.
//! - `dev`, `demo`, `hall` (Cargo feature `demo`, on by default): development
//!   mode and the demo relying party it serves; a production build
//!   (`--no-default-features`) contains none of them.
//! - [`seals`]: the check of a seal signature (扫码签章 with a GB/T 38540 seal).

pub mod app;
pub mod apps;
pub mod broker;
pub mod cert_checks;
pub mod clock;
pub mod config;
pub mod crl;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "demo")]
pub mod dev;
pub mod error;
/// The opening hall's side of 扫码解密, now in the relying-party client crate.
#[cfg(feature = "demo")]
pub use bzt_rp_client::hall;
pub mod http;
pub mod seals;
pub mod shutdown;
pub mod store;
pub mod timers;
pub mod webhook;

pub use app::Application;
pub use config::Config;
