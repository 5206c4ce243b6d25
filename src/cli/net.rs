//! What every client command shares to reach a broker over `https:`/`wss:`.

use anyhow::Context;
use bzt_rp_client::ClientTls;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// CA certificates (PEM) to trust for `https:`/`wss:` besides the Web PKI roots (a broker
    /// behind a platform's own CA or a self-signed test front).
    #[arg(long, env = "BZT_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
}

impl TlsArgs {
    /// The roots to trust.
    pub fn client_tls(&self) -> anyhow::Result<ClientTls> {
        let tls = ClientTls::web_pki();
        match &self.ca_file {
            Some(path) => tls
                .with_ca_file(path)
                .with_context(|| format!("--ca-file {}", path.display())),
            None => Ok(tls),
        }
    }

    /// An HTTP client trusting the same roots, with a per-request timeout.
    pub fn http_client(
        &self,
        tls: &ClientTls,
        timeout: Duration,
    ) -> anyhow::Result<reqwest::Client> {
        Ok(tls.http_builder()?.timeout(timeout).build()?)
    }
}
