//! CRLs of a trust domain's CA, made by OpenSSL (`openssl ca -gencrl`, an
//! independent implementation) for the SM2 root the tests' phones chain to:
//! a listed serial is refused, a CRL with one flipped byte stops the start
//! (and a refresh keeps the last good one), a stale CRL raises a metric and,
//! with `crl_stale = "refuse"`, refuses.

use crate::helpers::*;
use bzt::config::CrlStale;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const CA_CNF: &str = "[ca]\ndefault_ca = ca_default\n[ca_default]\ndatabase = index.txt\n\
crlnumber = crlnumber\ndefault_md = sm3\ndefault_crl_days = 30\n";

/// `openssl ca -gencrl` for the `platform` root, listing `revoked` serials;
/// `hours` sets nextUpdate that many hours ahead. Answers the PEM file.
fn openssl_crl(dir: &Path, cas: &TestCas, revoked: &[&str], hours: Option<u32>) -> PathBuf {
    let ca_dir = dir.join("platform-ca");
    cas.ca("platform").save(&ca_dir).unwrap();
    std::fs::write(ca_dir.join("ca.cnf"), CA_CNF).unwrap();
    std::fs::write(ca_dir.join("crlnumber"), "01\n").unwrap();
    let index: String = revoked
        .iter()
        .map(|s| {
            let mut hex = s.to_uppercase();
            if hex.len() % 2 == 1 {
                hex.insert(0, '0');
            }
            format!("R\t351231000000Z\t260101000000Z\t{hex}\tunknown\t/CN=revoked\n")
        })
        .collect();
    std::fs::write(ca_dir.join("index.txt"), index).unwrap();
    let hours = hours.map(|h| h.to_string());
    let mut args = vec![
        "ca",
        "-config",
        "ca.cnf",
        "-cert",
        "ca.pem",
        "-keyfile",
        "ca.key.pem",
        "-gencrl",
        "-out",
        "crl.pem",
        "-sigopt",
        "distid:1234567812345678",
    ];
    if let Some(h) = &hours {
        args.extend(["-crlhours", h]);
    }
    openssl_ok(&ca_dir, &args);
    ca_dir.join("crl.pem")
}

/// The broker's refusal of this phone's approval.
async fn refused(phone: &TestPhone, claimed: &bzt_phone::Claimed) -> bzt_phone::BrokerError {
    match phone.approve(claimed).await {
        Err(bzt_phone::Error::Broker(e)) => e,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn with_crl(cfg: &mut bzt::config::Config, crl: &Path, stale: CrlStale) {
    let d = cfg
        .trust_domains
        .iter_mut()
        .find(|d| d.name == "platform")
        .unwrap();
    d.crl_files = vec![crl.to_path_buf()];
    d.crl_stale = stale;
}

/// The CRL is written before the broker starts, in a directory of its own.
struct CrlFixture {
    _dir: tempfile::TempDir,
    cas: Arc<TestCas>,
    crl: PathBuf,
}

fn fixture(revoked: impl Fn(&TestCas) -> Vec<String>, hours: Option<u32>) -> CrlFixture {
    let dir = tempfile::tempdir().unwrap();
    let cas = Arc::new(TestCas::generate());
    let serials = revoked(&cas);
    let refs: Vec<&str> = serials.iter().map(String::as_str).collect();
    let crl = openssl_crl(dir.path(), &cas, &refs, hours);
    CrlFixture {
        _dir: dir,
        cas,
        crl,
    }
}

#[tokio::test]
async fn a_serial_listed_in_the_cas_crl_is_refused_and_others_pass() {
    let cas = Arc::new(TestCas::generate());
    let revoked_leaf = cas.leaf("platform", "张三");
    let dir = tempfile::tempdir().unwrap();
    let crl = openssl_crl(dir.path(), &cas, &[&revoked_leaf.serial_hex], None);
    let app = TestApp::spawn_with_cas(cas, |cfg| with_crl(cfg, &crl, CrlStale::Refuse)).await;

    let phone = app.phone_with(revoked_leaf, "p");
    let created = app.create_session(login_body()).await;
    let claimed = phone.claim(&created).await;
    let e = refused(&phone, &claimed).await;
    assert!(
        e.is("untrusted_certificate") && e.message.contains("revoked by the CRL"),
        "{e}"
    );
    let good = app.phone("platform", "q");
    let created = app.create_session(login_body()).await;
    let claimed = good.claim(&created).await;
    good.approve(&claimed).await.unwrap();
}

#[tokio::test]
async fn a_crl_with_one_flipped_byte_stops_the_start() {
    let fx = fixture(|_| vec!["1234".into()], None);
    // Flip one byte of the signed part (the DER inside the PEM).
    let pem = std::fs::read_to_string(&fx.crl).unwrap();
    let out = openssl_ok(
        fx.crl.parent().unwrap(),
        &[
            "crl", "-in", "crl.pem", "-outform", "DER", "-out", "crl.der",
        ],
    );
    drop(out);
    let mut der = std::fs::read(fx.crl.with_extension("der")).unwrap();
    assert!(pem.contains("BEGIN X509 CRL"));
    // The listed serial 0x1234 (INTEGER 02 02 12 34): an attacker un-revoking it.
    let i = der
        .windows(4)
        .position(|w| w == [0x02, 0x02, 0x12, 0x34])
        .expect("the revoked serial in the DER")
        + 3;
    der[i] ^= 0x01;
    let flipped = fx.crl.with_file_name("flipped.der");
    std::fs::write(&flipped, &der).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path(), &fx.cas);
    with_crl(&mut config, &flipped, CrlStale::Warn);
    let clock = bzt::clock::ManualClock::starting_now();
    let err = bzt::Application::build(&config, Arc::new(clock), None)
        .await
        .err()
        .expect("a damaged CRL must stop the start");
    let text = format!("{err:#}");
    assert!(
        text.contains("trust domain platform") && text.contains("damaged or forged"),
        "{text}"
    );

    // The unflipped DER loads (so it was the flip, not the format).
    let mut config = base_config(dir.path(), &fx.cas);
    with_crl(&mut config, &fx.crl.with_extension("der"), CrlStale::Warn);
    bzt::Application::build(
        &config,
        Arc::new(bzt::clock::ManualClock::starting_now()),
        None,
    )
    .await
    .expect("the intact CRL loads");
}

#[tokio::test]
async fn a_crl_signed_by_another_ca_of_the_same_name_is_refused() {
    let fx = fixture(|_| vec![], None);
    let other = TestCas::generate();
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config(dir.path(), &other);
    with_crl(&mut config, &fx.crl, CrlStale::Warn);
    let err = bzt::Application::build(
        &config,
        Arc::new(bzt::clock::ManualClock::starting_now()),
        None,
    )
    .await
    .err()
    .expect("a CRL of another CA must stop the start");
    // The other CA has the same name as the configured root: its key decides.
    assert!(format!("{err:#}").contains("damaged or forged"), "{err:#}");
}

#[tokio::test]
async fn a_stale_crl_warns_and_with_refuse_refuses() {
    let fx = fixture(|_| vec![], Some(1));
    // crl_stale = "warn": two hours later the login passes, the metric says stale.
    let crl = fx.crl.clone();
    let app =
        TestApp::spawn_with_cas(fx.cas.clone(), |cfg| with_crl(cfg, &crl, CrlStale::Warn)).await;
    let phone = app.phone("platform", "p");
    app.clock.advance(Duration::from_secs(2 * 3600));
    let created = app.create_session(login_body()).await;
    let claimed = phone.claim(&created).await;
    phone.approve(&claimed).await.unwrap();
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let source = crl.display().to_string();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("bzt_crl_stale{") && l.contains(&source) && l.ends_with(" 1")),
        "{metrics}"
    );

    // crl_stale = "refuse": fresh, it passes; two hours later it is refused.
    let app =
        TestApp::spawn_with_cas(fx.cas.clone(), |cfg| with_crl(cfg, &crl, CrlStale::Refuse)).await;
    let created = app.create_session(login_body()).await;
    let claimed = phone.claim(&created).await;
    phone.approve(&claimed).await.unwrap();
    app.clock.advance(Duration::from_secs(2 * 3600));
    let created = app.create_session(login_body()).await;
    let claimed = phone.claim(&created).await;
    let e = refused(&phone, &claimed).await;
    assert!(
        e.is("untrusted_certificate") && e.message.contains("stale"),
        "{e}"
    );
}

/// What the test's CRL distribution point answers: a status and a body.
type Served = Arc<std::sync::Mutex<(u16, Vec<u8>)>>;

async fn crl_server(served: Served) -> String {
    let router = axum::Router::new().route(
        "/ca.crl",
        axum::routing::get(move || {
            let served = served.clone();
            async move {
                let (status, body) = served.lock().unwrap().clone();
                (axum::http::StatusCode::from_u16(status).unwrap(), body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ca.crl", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

#[tokio::test]
async fn a_failed_crl_url_refresh_keeps_the_last_good_crl() {
    let cas = Arc::new(TestCas::generate());
    let revoked_leaf = cas.leaf("platform", "张三");
    let dir = tempfile::tempdir().unwrap();
    let listing = openssl_crl(dir.path(), &cas, &[&revoked_leaf.serial_hex], None);
    let listing = std::fs::read(listing).unwrap();
    let served: Served = Arc::new(std::sync::Mutex::new((200, listing.clone())));
    let url = crl_server(served.clone()).await;
    let with_url = |cfg: &mut bzt::config::Config| {
        let d = cfg
            .trust_domains
            .iter_mut()
            .find(|d| d.name == "platform")
            .unwrap();
        d.crl_urls = vec![url.clone()];
        d.crl_stale = CrlStale::Refuse;
    };
    let app = TestApp::spawn_with_cas(cas.clone(), with_url).await;
    // The sources the broker refreshes, as it reads them from the same configuration.
    let trust = app.broker().trust().clone();
    let mut config = base_config(dir.path(), &cas);
    with_url(&mut config);
    let sources = bzt::crl::load_at_start(&config, &trust).await.unwrap();
    let phone = app.phone_with(revoked_leaf, "p");
    let is_refused = || async {
        let created = app.create_session(login_body()).await;
        let claimed = phone.claim(&created).await;
        match phone.approve(&claimed).await {
            Err(bzt_phone::Error::Broker(e)) => {
                assert!(e.message.contains("revoked by the CRL"), "{e}");
                true
            }
            Ok(_) => false,
            Err(other) => panic!("{other:?}"),
        }
    };
    assert!(is_refused().await, "listed by the CRL fetched at start");

    // The distribution point fails, then serves a damaged CRL (the listed
    // serial's byte flipped: an attacker un-revoking it), then another
    // CA's CRL of the same name: each refresh fails, the listing stays.
    let der = openssl_ok(
        &dir.path().join("platform-ca"),
        &["crl", "-in", "crl.pem", "-outform", "DER"],
    )
    .stdout;
    let mut serial_hex = phone.serial();
    if serial_hex.len() % 2 == 1 {
        serial_hex.insert(0, '0');
    }
    let serial = hex::decode(serial_hex).unwrap();
    let at = der
        .windows(serial.len())
        .position(|w| w == serial.as_slice())
        .expect("the revoked serial in the CRL's DER");
    let mut flipped = der.clone();
    flipped[at + serial.len() - 1] ^= 0x01;
    let other_cas = TestCas::generate();
    let other_dir = tempfile::tempdir().unwrap();
    let forged = std::fs::read(openssl_crl(other_dir.path(), &other_cas, &[], None)).unwrap();
    for (status, body) in [(503, b"busy".to_vec()), (200, flipped), (200, forged)] {
        *served.lock().unwrap() = (status, body);
        bzt::crl::refresh_once(&trust, &sources[0]).await;
        assert!(
            is_refused().await,
            "a failed refresh (HTTP {status}) must keep the last good CRL"
        );
    }

    // A good CRL that no longer lists the serial does replace it: the
    // refreshes above ran, and kept the old CRL because they failed.
    let cleared = std::fs::read(openssl_crl(dir.path(), &cas, &[], None)).unwrap();
    *served.lock().unwrap() = (200, cleared);
    bzt::crl::refresh_once(&trust, &sources[0]).await;
    assert!(!is_refused().await, "the new CRL no longer lists it");
}
