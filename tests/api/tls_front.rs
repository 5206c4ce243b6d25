//! `bzt hall decrypt` and `bzt phone` against a broker behind TLS: a TLS-terminating front
//! (tokio-rustls, certificate made by the OpenSSL CLI) on `https://127.0.0.1:<port>`, which is
//! also the broker's `public_base_url`, so the QR, the phone's calls and the hall's browser
//! socket (`wss:`) all go through it. The clients trust the front only through `--ca-file`.

use crate::helpers::*;
use bzt_envelope::{seal, Recipient, SealOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio_rustls::rustls;

/// A test CA and a P-256 server certificate for 127.0.0.1 signed by it, by the OpenSSL CLI:
/// `(ca.pem, server-cert.pem, server-key.pem)`.
/// `bzt hall decrypt` as the opening hall runs it against the broker behind `front`.
fn hall_decrypt_through(dir: &Path, front: &str) -> tokio::process::Command {
    let mut command = bzt_cmd(dir);
    command.args([
        "hall",
        "decrypt",
        "--broker",
        front,
        "--api-key",
        OTHER_API_KEY,
    ]);
    command
}

fn front_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |name: &str| dir.join(name);
    let run = |args: &[&str]| {
        bzt_openssl_cli::run_ok(dir, args);
    };
    std::fs::write(
        p("server.ext"),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-days", "1", "-subj", "/CN=bzt test front CA"],
    ]
    .concat()
    .into_iter()
    .chain(["-keyout", "ca-key.pem", "-out", "ca.pem"])
    .collect::<Vec<_>>());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server-key.pem",
            "-out",
            "server.csr",
        ],
    ]
    .concat());
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "server-cert.pem",
    ]);
    (p("ca.pem"), p("server-cert.pem"), p("server-key.pem"))
}

/// Accepts TLS on `listener` and relays the plaintext to `backend` (HTTP and WebSocket alike).
fn start_front(listener: tokio::net::TcpListener, cert: &Path, key: &Path, backend: String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, backend) = (acceptor.clone(), backend.clone());
            tokio::spawn(async move {
                // A client that refuses our certificate ends here; that is part of the test.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(&backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
}

fn bzt_cmd(dir: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_bzt"));
    cmd.current_dir(dir)
        .env_remove("BZT_CONFIG")
        .env_remove("BZT_API_KEY")
        .env_remove("BZT_BROKER_URL")
        .env_remove("BZT_CA_FILE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hall_decrypt_and_phone_cli_work_through_a_tls_front() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (ca, front_cert, front_key) = front_certificates(dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let public = front.clone();
    let app = TestApp::spawn_with(move |c| c.public_base_url = Some(public)).await;
    let backend = app.address.trim_start_matches("http://").to_owned();
    start_front(listener, &front_cert, &front_key, backend);

    // A bid file sealed to 张三, whose phone (the CLI) will open it at the hall.
    let leaf = app.cas.leaf("platform", "张三");
    std::fs::write(dir.join("cert.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &leaf.key_pem).unwrap();
    let plain: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut sealed = Vec::new();
    let to = [Recipient::from_pem(&leaf.cert_pem).unwrap()];
    seal(&to, &plain[..], &mut sealed, &SealOptions::default()).unwrap();
    std::fs::write(dir.join("bid.bze"), &sealed).unwrap();
    let ca_file = ca.to_str().unwrap();

    // Without the front's CA the hall cannot even create its session: TLS is really in the path.
    let refused = hall_decrypt_through(dir, &front)
        .args(["bid.bze", "refused.bin"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("cannot talk to the broker"), "{err}");
    assert!(err.contains("certificate"), "the cause is named: {err}");
    assert!(!dir.join("refused.bin").exists());

    let mut hall = hall_decrypt_through(dir, &front)
        .args(["--ca-file", ca_file, "bid.bze", "opened.bin"])
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(hall.stdout.take().unwrap()).lines();
    let mut hall_err = hall.stderr.take().unwrap();
    let qr = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(qr) = line.strip_prefix("QR text: ") {
                return qr.to_owned();
            }
        }
        let mut err = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut hall_err, &mut err).await;
        panic!("the hall ended without a QR text: {err}");
    })
    .await
    .expect("a QR text from the hall");
    assert!(qr.starts_with(&front), "the QR names the TLS front: {qr}");

    let phone = bzt_cmd(dir)
        .args([
            "phone", "approve", &qr, "--cert", "cert.pem", "--key", "key.pem",
        ])
        .args(["--ca-file", ca_file])
        .output()
        .await
        .unwrap();
    assert!(
        phone.status.success(),
        "bzt phone approve: {}{}",
        String::from_utf8_lossy(&phone.stdout),
        String::from_utf8_lossy(&phone.stderr)
    );

    let status = tokio::time::timeout(Duration::from_secs(60), hall.wait())
        .await
        .expect("the hall finishes")
        .unwrap();
    let mut rest = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(status.success(), "bzt hall decrypt failed: {rest}");
    assert!(rest.contains("已解密"), "{rest}");
    assert_eq!(std::fs::read(dir.join("opened.bin")).unwrap(), plain);
}
