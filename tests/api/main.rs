//! Integration tests of the broker core: each test starts a real broker on
//! `127.0.0.1:0` (see `helpers::TestApp`) and talks to it as the RP backend,
//! the browser and the phone do, following docs/protocol.md.

mod audit;
mod browser;
mod claims;
mod cli_output;
mod completion;
mod conversation;
mod cosign_context;
mod crl;
mod display_text;
mod envelope_flows;
mod errors;
mod flows;
mod grants;
mod helpers;
mod hostile_chains;
mod input_gaps;
mod interop;
mod key_usage;
mod limits;
mod ops;
mod relay;
mod rp_client;
mod rp_match_code;
mod seals;
mod split_key;
mod tls_front;
mod webhook_targets;
mod webhooks;
