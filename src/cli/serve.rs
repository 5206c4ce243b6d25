//! `bzt serve`.

use anyhow::Context;
use bzt::clock::SystemClock;
use bzt::config::Config;
use bzt::Application;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct ServeArgs {
    /// TOML configuration file; without it the broker runs in development mode.
    #[arg(long, env = "BZT_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines (for log shippers).
    #[arg(long)]
    json_logs: bool,
}

pub(super) fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BZT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journald gets plain text.
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(on_terminal);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing(args.json_logs);
    let config = Config::load(args.config.as_deref())?;
    #[cfg(feature = "demo")]
    let (config, dev) = if args.config.is_none() {
        let (config, secrets) = bzt::dev::embedded(config)?;
        (config, Some(secrets))
    } else {
        (config, None)
    };
    #[cfg(not(feature = "demo"))]
    if args.config.is_none() {
        anyhow::bail!(
            "this build has no development mode (built without the `demo` feature): pass --config"
        );
    }
    super::runtime()?.block_on(async move {
        let listener = Application::bind(&config).await?;
        #[cfg(feature = "demo")]
        let (config, cosigner) = {
            let mut config = config;
            let cosigner = start_dev_cosigner(&mut config, &listener).await;
            (config, cosigner)
        };
        #[cfg(feature = "demo")]
        let demo = dev.as_ref().map(|s| bzt::demo::routes(&config, s));
        #[cfg(not(feature = "demo"))]
        let demo = None;
        let app = Application::build_on(listener, &config, Arc::new(SystemClock), demo).await?;
        #[cfg(feature = "demo")]
        if let Some(secrets) = &dev {
            print_dev_banner(&config, secrets, app.port());
        }
        tracing::info!(
            addr = %app.local_addr(),
            store = ?config.store.kind,
            runtime = super::RuntimeShape::for_this_process().name(),
            "bzt broker listening"
        );
        let broker = app.broker();
        let config_file = args.config.clone();
        tokio::spawn(reload_on_sighup(broker, config_file));
        let served = app.run(shutdown_signal()).await;
        #[cfg(feature = "demo")]
        drop(cosigner);
        served
    })
}

/// Development mode: the co-signing service of split keys, as its own process. Without it
/// the broker still serves; split keys are then unavailable.
#[cfg(feature = "demo")]
async fn start_dev_cosigner(
    config: &mut Config,
    listener: &tokio::net::TcpListener,
) -> Option<bzt::dev::DevCosigner> {
    let port = listener.local_addr().ok()?.port();
    let broker_url = format!("http://127.0.0.1:{port}");
    match bzt::dev::DevCosigner::start(config, &broker_url).await {
        Ok(cosigner) => cosigner,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "development co-signing service not started; split keys are unavailable");
            None
        }
    }
}

#[cfg(feature = "demo")]
fn print_dev_banner(config: &Config, secrets: &bzt::dev::DevSecrets, port: u16) {
    let base = config.public_base_url();
    let cosigner_url = config.cosigner.url.as_deref().unwrap_or("(none)");
    let data = bzt::dev::data_dir(config);
    let banner = format!(
        "\n\
         ************************************************************************\n\
         *  DEVELOPMENT MODE: no configuration file was given.                  *\n\
         *  Memory store, development CAs and a demo app. NOT FOR PRODUCTION.   *\n\
         ************************************************************************\n\
         web demo:        {base}/demo/\n\
         listening port:  {port}\n\
         demo app id:     {}\n\
         demo API key:    {}\n\
         admin token:     {}\n\
         data directory:  {} (development CAs and these secrets)\n\
         co-signing service (密钥拆分): {}\n\
         issue a phone certificate:  bzt dev-ca issue --cn 张三 --org 示例建设有限公司 --out phone1\n\
         enrol a split key:          bzt phone enroll --cosigner {} --pin 123456 --cn 张三 --org 示例建设有限公司 --out phone1-split\n",
        bzt::dev::DEMO_APP_ID,
        secrets.demo_api_key,
        secrets.admin_token,
        data.display(),
        cosigner_url,
        cosigner_url,
    );
    tracing::warn!("development mode: not for production");
    eprintln!("{banner}");
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

/// SIGHUP re-reads `revocation.serials` from the configuration file.
async fn reload_on_sighup(broker: Arc<bzt::broker::Broker>, file: Option<PathBuf>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            let reloaded = Config::load(file.as_deref())
                .context("reloading configuration")
                .and_then(|c| {
                    broker
                        .revocations()
                        .replace_configured(&c.revocation.serials)
                        .map_err(anyhow::Error::msg)
                        .map(|_| c.revocation.serials.len())
                });
            match reloaded {
                Ok(n) => tracing::info!(serials = n, "revocation list reloaded"),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "revocation reload failed; keeping the old list")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (broker, file);
}
