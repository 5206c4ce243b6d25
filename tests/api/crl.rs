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
