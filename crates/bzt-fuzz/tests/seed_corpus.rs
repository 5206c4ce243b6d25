//! Writes the seed corpus (`corpus/<target>/seed-*`) from real inputs made
//! here: dev-CA certificates, a sealed envelope, a seal. Run it by hand when
//! a format changes: `cargo test -p bzt-fuzz --test seed_corpus -- --ignored`.

use std::path::Path;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

#[test]
#[ignore = "writes the seed corpus into the source tree"]
fn write_seed_corpus() {
    use bzt_devca::{DevCa, LeafSpec};
    use time::{Duration, OffsetDateTime};
    use x509_cert::der::Encode;

    let ca = DevCa::generate("测试根", "bzt 测试", "platform").unwrap();
    let leaf = ca
        .issue(&LeafSpec::new("张三", "示例建设有限公司"))
        .unwrap();
    let leaf_der = leaf.certificate().unwrap().to_der().unwrap();
    let ca_pem = ca.cert_pem();

    let id = "AAAAAAAAAAAAAAAAAAAAAA";
    let secret = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t-x";
    let qr = format!("https://bzt.example.com/q/{id}#{secret}");
    write("qr_text", "plain", qr.as_bytes());
    write(
        "qr_text",
        "prefix",
        format!("http://127.0.0.1:8080/bzt/q/{id}#{secret}").as_bytes(),
    );

    let claim = serde_json::json!({"qr_text": qr, "device": {"id": "dev-1", "name": "张三的手机"}});
    write("claim_body", "plain", claim.to_string().as_bytes());

    let approve = serde_json::json!({
        "certificate_pem": leaf.cert_pem,
        "chain_pem": [ca_pem],
        "signature_b64": "MEUCIQC7",
        "match_code": "42",
        "open_conversation": true,
    });
    write("complete_body", "approve", approve.to_string().as_bytes());
    let encrypt = serde_json::json!({
        "certificate_pem": leaf.cert_pem,
        "signature_b64": "AAAA",
        "recipients_pem": [leaf.cert_pem],
        "wrapped_key_b64": "AAECAw==",
    });
    write("complete_body", "encrypt", encrypt.to_string().as_bytes());
    let reject = serde_json::json!({"reject": {"reason": "不是我发起的"}});
    write("complete_body", "reject", reject.to_string().as_bytes());

    write("pem_chain", "leaf", leaf.cert_pem.as_bytes());
    write(
        "pem_chain",
        "chain",
        format!("{}{}", leaf.cert_pem, ca_pem).as_bytes(),
    );
    write("cert_der", "leaf", &leaf_der);
    write("cert_der", "ca", &ca.certificate().to_der().unwrap());

    let recipient = bzt_envelope::Recipient::from_pem(&leaf.cert_pem).unwrap();
    let mut sealed = Vec::new();
    bzt_envelope::seal(
        &[recipient],
        &b"bid file"[..],
        &mut sealed,
        &bzt_envelope::SealOptions::default(),
    )
    .unwrap();
    write("envelope_header", "one-recipient", &sealed);

    let now = OffsetDateTime::now_utc();
    let seal = bzt_seal::make_seal(
        &bzt_seal::SealSpec {
            es_id: "FUZZ0001".into(),
            seal_type: bzt_seal::SealType::Company,
            name: "示例建设有限公司".into(),
            owner_certs: vec![leaf_der],
            created: now,
            valid_start: now - Duration::days(1),
            valid_end: now + Duration::days(30),
            picture: bzt_seal::Picture {
                picture_type: "PNG".into(),
                data: b"\x89PNG\r\n\x1a\n".to_vec(),
                width_mm: 40,
                height_mm: 40,
            },
        },
        &ca.certificate().to_der().unwrap(),
        ca.signing_key(),
    )
    .unwrap();
    write("seal_asn1", "seal", &seal);
}
