//! GB/T 38540 seals and seal signatures: made here, read back, checked by OpenSSL and by an
//! independent DER reader (pyasn1), and refused when anything is changed.

use bzt_devca::{DevCa, IssuedCert, LeafSpec};
use bzt_seal::{
    make_seal, sign_with_seal, verify_seal, verify_signature, Picture, Seal, SealErrorKind,
    SealSignature, SealSpec, SealType,
};
use sm2::dsa::SigningKey;
use sm3::{Digest, Sm3};
use std::path::Path;
use std::process::Command;
use time::{Duration, OffsetDateTime};
use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

/// Stands in for a PNG: the crate carries the picture's bytes without decoding them.
const PICTURE: &[u8] = b"\x89PNG\r\n\x1a\n-not-decoded-by-the-seal-crate-";
const DOCUMENT: &[u8] = "投标文件 第1页".as_bytes();
const PROPERTY_INFO: &str = "/Doc_0/Signs/Sign_0/Signature.xml";

struct Fixture {
    /// The seal maker (the development CA in development mode).
    maker: DevCa,
    /// The company certificate the seal is bound to.
    owner: IssuedCert,
    owner_key: SigningKey,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn der_of(cert: &IssuedCert) -> Vec<u8> {
    cert.certificate().unwrap().to_der().unwrap()
}

fn key_of(cert: &IssuedCert) -> SigningKey {
    bzt_devca::signing_key(&bzt_devca::key_from_pem(&cert.key_pem, None).unwrap()).unwrap()
}

fn fixture() -> Fixture {
    let maker = DevCa::generate("bzt 开发制章系统", "bzt 开发", "platform").unwrap();
    let owner = maker
        .issue(&LeafSpec::new("示例建设有限公司", "示例建设有限公司"))
        .unwrap();
    let owner_key = key_of(&owner);
    Fixture {
        maker,
        owner,
        owner_key,
    }
}

fn spec(owner_der: Vec<u8>, valid_start: OffsetDateTime, valid_end: OffsetDateTime) -> SealSpec {
    SealSpec {
        es_id: "11010800000001".into(),
        seal_type: SealType::Company,
        name: "示例建设有限公司".into(),
        owner_certs: vec![owner_der],
        created: now(),
        valid_start,
        valid_end,
        picture: Picture {
            picture_type: "PNG".into(),
            data: PICTURE.to_vec(),
            width_mm: 40,
            height_mm: 40,
        },
    }
}

impl Fixture {
    fn maker_der(&self) -> Vec<u8> {
        self.maker.certificate().to_der().unwrap()
    }

    fn makers(&self) -> Vec<Certificate> {
        vec![self.maker.certificate().clone()]
    }

    fn seal(&self) -> Vec<u8> {
        let s = spec(
            der_of(&self.owner),
            now() - Duration::days(1),
            now() + Duration::days(365),
        );
        make_seal(&s, &self.maker_der(), self.maker.signing_key()).unwrap()
    }

    fn stamp(&self, seal: &[u8]) -> Vec<u8> {
        sign_with_seal(
            seal,
            &der_of(&self.owner),
            &self.owner_key,
            &Sm3::digest(DOCUMENT),
            PROPERTY_INFO,
            now(),
        )
        .unwrap()
    }
}

#[test]
fn a_seal_and_a_seal_signature_round_trip_and_verify() {
    let f = fixture();
    let seal_der = f.seal();
    let seal = Seal::from_der(&seal_der).unwrap();
    assert_eq!(seal.der(), &seal_der[..]);
    assert_eq!(seal.es_id(), "11010800000001");
    assert_eq!(seal.name(), "示例建设有限公司");
    assert_eq!(seal.seal_type(), Some(SealType::Company));
    assert_eq!(seal.picture().data, PICTURE);
    assert_eq!(
        (seal.picture().width_mm, seal.picture().height_mm),
        (40, 40)
    );
    assert!(seal.is_bound_to(&der_of(&f.owner)).unwrap());
    assert_eq!(seal.maker_cert_der(), &f.maker_der()[..]);
    verify_seal(&seal, &f.makers(), now()).unwrap();

    let sig_der = f.stamp(&seal_der);
    let sig = SealSignature::from_der(&sig_der).unwrap();
    assert_eq!(
        sig.seal().der(),
        &seal_der[..],
        "the seal is embedded byte for byte"
    );
    assert_eq!(sig.data_hash(), Sm3::digest(DOCUMENT).as_slice());
    assert_eq!(sig.property_info(), PROPERTY_INFO);
    assert_eq!(sig.signer_cert_der(), &der_of(&f.owner)[..]);
    // Re-encoding what was read gives the same bytes (DER is canonical).
    assert_eq!(sig.asn1().to_der().unwrap(), sig_der);
    let ok = verify_signature(&sig, &f.makers(), &Sm3::digest(DOCUMENT), now()).unwrap();
    assert_eq!(ok.signer.to_der().unwrap(), der_of(&f.owner));
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("the tool runs (scripts/install-test-deps.sh installs it)");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl_verify(dir: &Path, cert_der: &str, msg: &str, sig: &str) -> String {
    let pem = dir.join(format!("{cert_der}.pem"));
    run(Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(dir.join(cert_der))
        .arg("-out")
        .arg(&pem));
    run(Command::new("openssl")
        .args(["pkeyutl", "-verify", "-certin", "-inkey"])
        .arg(&pem)
        .args([
            "-rawin",
            "-digest",
            "sm3",
            "-pkeyopt",
            "distid:1234567812345678",
            "-in",
        ])
        .arg(dir.join(msg))
        .arg("-sigfile")
        .arg(dir.join(sig)))
}

#[test]
fn pyasn1_reads_every_field_and_openssl_verifies_both_signatures_over_the_parts_it_re_encodes() {
    let f = fixture();
    let sig_der = f.stamp(&f.seal());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sig.der");
    std::fs::write(&file, &sig_der).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_seal.py");
    let json = run(Command::new("python3")
        .arg(script)
        .arg(&file)
        .arg(dir.path()));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();

    let sig = SealSignature::from_der(&sig_der).unwrap();
    let seal = sig.seal();
    assert_eq!(
        v["header"],
        serde_json::json!({"id": "ES", "version": 4, "vid": "bzt"})
    );
    assert_eq!(v["esID"], "11010800000001");
    assert_eq!(v["property"]["type"], 1);
    assert_eq!(v["property"]["name"], "示例建设有限公司");
    assert_eq!(v["property"]["certListType"], 1);
    assert_eq!(
        v["property"]["certList"],
        serde_json::json!([hex::encode(der_of(&f.owner))])
    );
    let gt = |t: OffsetDateTime| {
        t.format(time::macros::format_description!(
            "[year][month][day][hour][minute][second]Z"
        ))
        .unwrap()
    };
    assert_eq!(v["property"]["validStart"], gt(seal.valid_start()));
    assert_eq!(v["property"]["validEnd"], gt(seal.valid_end()));
    assert!(v["property"]["createDate"].as_str().unwrap().ends_with('Z'));
    assert_eq!(v["picture"]["type"], "PNG");
    assert_eq!(v["picture"]["data"], hex::encode(PICTURE));
    assert_eq!(
        (
            v["picture"]["width"].as_u64(),
            v["picture"]["height"].as_u64()
        ),
        (Some(40), Some(40))
    );
    assert_eq!(v["sealExtDatas"], false);
    assert_eq!(v["sealCert"], hex::encode(f.maker_der()));
    assert_eq!(v["signAlgID"], "1.2.156.10197.1.501");
    assert_eq!(v["version"], 4);
    assert_eq!(v["timeInfo"], gt(sig.time_info()));
    assert_eq!(v["dataHash"], hex::encode(Sm3::digest(DOCUMENT)));
    assert_eq!(v["propertyInfo"], PROPERTY_INFO);
    assert_eq!(v["tbsExtDatas"], false);
    assert_eq!(v["cert"], hex::encode(der_of(&f.owner)));
    assert_eq!(v["signatureAlgID"], "1.2.156.10197.1.501");
    assert_eq!(v["timeStamp"], false);

    // pyasn1's own DER of the signed parts is what the signatures cover: OpenSSL agrees.
    let maker = openssl_verify(
        dir.path(),
        "maker_cert.der",
        "sealinfo.der",
        "maker_sig.der",
    );
    assert!(maker.contains("Signature Verified Successfully"), "{maker}");
    let signer = openssl_verify(dir.path(), "signer_cert.der", "tbs.der", "signer_sig.der");
    assert!(
        signer.contains("Signature Verified Successfully"),
        "{signer}"
    );
    // And a changed message does not verify (the check above could fail).
    let mut tbs = std::fs::read(dir.path().join("tbs.der")).unwrap();
    let last = tbs.len() - 1;
    tbs[last] ^= 1;
    std::fs::write(dir.path().join("tbs.der"), tbs).unwrap();
    let out = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-certin", "-inkey"])
        .arg(dir.path().join("signer_cert.der.pem"))
        .args([
            "-rawin",
            "-digest",
            "sm3",
            "-pkeyopt",
            "distid:1234567812345678",
            "-in",
        ])
        .arg(dir.path().join("tbs.der"))
        .arg("-sigfile")
        .arg(dir.path().join("signer_sig.der"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// The parts an error may name, as GB/T 38540 names them.
const PARTS: [&str; 17] = [
    "SES_Signature",
    "SES_Signature.cert",
    "SES_Signature.signature",
    "SES_Signature.signatureAlgID",
    "TBS_Sign",
    "TBS_Sign.version",
    "TBS_Sign.timeInfo",
    "TBS_Sign.dataHash",
    "TBS_Sign.extDatas",
    "SESeal",
    "SESeal.cert",
    "SESeal.signAlgID",
    "SESeal.signedValue",
    "SES_SealInfo",
    "SES_Header.id",
    "SES_Header.version",
    "SES_ESPropertyInfo.certList",
];

#[test]
fn a_flipped_byte_anywhere_in_a_seal_signature_fails_and_the_error_names_the_part() {
    let f = fixture();
    let sig_der = f.stamp(&f.seal());
    let hash = Sm3::digest(DOCUMENT);
    let makers = f.makers();
    let mut named = std::collections::BTreeSet::new();
    for i in 0..sig_der.len() {
        let mut bad = sig_der.clone();
        bad[i] ^= 0x01;
        let err = SealSignature::from_der(&bad)
            .and_then(|s| verify_signature(&s, &makers, &hash, now()))
            .expect_err(&format!("byte {i} flipped still verifies"));
        assert!(
            PARTS.contains(&err.part) || err.part.starts_with("SES_ESPropertyInfo"),
            "byte {i}: {err}"
        );
        assert!(err.to_string().starts_with(err.part), "{err}");
        named.insert(err.part);
    }
    // Damage is reported where it is found, not under one catch-all name.
    assert!(named.contains("SES_Signature.signature"), "{named:?}");
    assert!(named.len() >= 3, "{named:?}");
}

#[test]
fn a_flipped_byte_anywhere_in_a_seal_fails_and_the_error_names_the_part() {
    let f = fixture();
    let seal_der = f.seal();
    let makers = f.makers();
    let mut named = std::collections::BTreeSet::new();
    for i in 0..seal_der.len() {
        let mut bad = seal_der.clone();
        bad[i] ^= 0x01;
        let err = Seal::from_der(&bad)
            .and_then(|s| verify_seal(&s, &makers, now()))
            .expect_err(&format!("byte {i} flipped still verifies"));
        assert!(
            PARTS.contains(&err.part) || err.part.starts_with("SES_"),
            "byte {i}: {err}"
        );
        named.insert(err.part);
    }
    assert!(named.contains("SESeal.signedValue"), "{named:?}");
}

#[test]
fn a_seal_made_for_another_certificate_is_refused() {
    let f = fixture();
    let other = f.maker.issue(&LeafSpec::new("李四", "另一家公司")).unwrap();
    let seal = f.seal();
    // The maker's own code refuses to stamp with it...
    let err = sign_with_seal(
        &seal,
        &der_of(&other),
        &key_of(&other),
        &[0; 32],
        "x",
        now(),
    )
    .unwrap_err();
    assert_eq!(err.kind, SealErrorKind::NotBound);
    // ...and a verifier refuses a signature made by hand with someone else's seal.
    let forged = forge_with_other_signer(&seal, &other);
    let sig = SealSignature::from_der(&forged).unwrap();
    let err = verify_signature(&sig, &f.makers(), &[7; 32], now()).unwrap_err();
    assert_eq!(err.kind, SealErrorKind::NotBound, "{err}");
    assert_eq!(err.part, "SES_ESPropertyInfo.certList");
}

/// An SES_Signature signed by `other` around a seal that is not bound to it (what a dishonest
/// phone could build without this crate's check).
fn forge_with_other_signer(seal_der: &[u8], other: &IssuedCert) -> Vec<u8> {
    use bzt_seal::asn1::{SeSeal, SesSignature, TbsSign};
    use x509_cert::der::asn1::{BitString, Ia5String, OctetString};
    let tbs = TbsSign {
        version: 4,
        eseal: SeSeal::from_der(seal_der).unwrap(),
        time_info: bzt_seal::SesTime::from_offset(now()).unwrap(),
        data_hash: BitString::from_bytes(&[7; 32]).unwrap(),
        property_info: Ia5String::new("x").unwrap(),
        ext_datas: None,
    };
    let sig = bzt_devca::sign_der(&key_of(other), &tbs.to_der().unwrap()).unwrap();
    SesSignature {
        to_sign: tbs,
        cert: OctetString::new(der_of(other)).unwrap(),
        signature_alg_id: bzt_seal::OID_SM2_WITH_SM3,
        signature: BitString::from_bytes(&sig).unwrap(),
        time_stamp: None,
    }
    .to_der()
    .unwrap()
}

#[test]
fn an_expired_seal_is_refused() {
    let f = fixture();
    let s = spec(
        der_of(&f.owner),
        now() - Duration::days(30),
        now() - Duration::days(1),
    );
    let seal = make_seal(&s, &f.maker_der(), f.maker.signing_key()).unwrap();
    let err = verify_seal(&Seal::from_der(&seal).unwrap(), &f.makers(), now()).unwrap_err();
    assert_eq!(err.kind, SealErrorKind::SealNotValid);
    let sig = SealSignature::from_der(&f.stamp(&seal)).unwrap();
    let err = verify_signature(&sig, &f.makers(), &Sm3::digest(DOCUMENT), now()).unwrap_err();
    assert_eq!(err.kind, SealErrorKind::SealNotValid, "{err}");
    assert_eq!(err.part, "SES_ESPropertyInfo.validEnd");
    assert!(err.message.contains("expired"), "{err}");
}

#[test]
fn a_seal_whose_maker_is_not_trusted_is_refused_and_one_issued_by_a_trusted_maker_is_accepted() {
    let f = fixture();
    let sig = SealSignature::from_der(&f.stamp(&f.seal())).unwrap();
    let stranger = DevCa::generate("别的制章系统", "别处", "platform").unwrap();
    let err = verify_signature(
        &sig,
        &[stranger.certificate().clone()],
        &Sm3::digest(DOCUMENT),
        now(),
    )
    .unwrap_err();
    assert_eq!(err.kind, SealErrorKind::UntrustedMaker, "{err}");
    assert_eq!(err.part, "SESeal.cert");

    // A maker certificate issued by a trusted maker root is trusted through it.
    let maker_leaf = f.maker.issue(&LeafSpec::new("制章员", "bzt 开发")).unwrap();
    let s = spec(
        der_of(&f.owner),
        now() - Duration::days(1),
        now() + Duration::days(30),
    );
    let seal = make_seal(&s, &der_of(&maker_leaf), &key_of(&maker_leaf)).unwrap();
    verify_seal(&Seal::from_der(&seal).unwrap(), &f.makers(), now()).unwrap();
    verify_seal(
        &Seal::from_der(&seal).unwrap(),
        &[stranger.certificate().clone()],
        now(),
    )
    .unwrap_err();
}

#[test]
fn a_signature_over_other_data_is_refused_naming_the_data_hash() {
    let f = fixture();
    let sig = SealSignature::from_der(&f.stamp(&f.seal())).unwrap();
    let err = verify_signature(&sig, &f.makers(), &Sm3::digest(b"other"), now()).unwrap_err();
    assert_eq!(
        (err.kind, err.part),
        (SealErrorKind::DataHash, "TBS_Sign.dataHash")
    );
}

#[test]
fn making_refuses_a_key_that_is_not_the_certificates() {
    let f = fixture();
    let s = spec(der_of(&f.owner), now(), now() + Duration::days(1));
    let err = make_seal(&s, &f.maker_der(), &f.owner_key).unwrap_err();
    assert_eq!(err.kind, SealErrorKind::Input);
}

/// GB/T 38540 takes ASN.1 GeneralizedTime, which may carry a fraction of a second
/// (BouncyCastle writes one when the milliseconds are not zero). Here OpenSSL makes the time
/// value and signs the `TBS_Sign` around it: the stamp reads, verifies, and keeps its fraction.
#[test]
fn a_stamp_whose_time_has_a_fraction_of_a_second_made_and_signed_by_openssl_verifies() {
    use bzt_seal::asn1::{SeSeal, SesSignature, TbsSign};
    use bzt_seal::SesTime;
    use x509_cert::der::asn1::{BitString, Ia5String, OctetString};
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let at = (now() - Duration::minutes(1))
        .replace_nanosecond(0)
        .unwrap();
    let text = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}.25Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    let time_der = dir.path().join("time.der");
    run(Command::new("openssl")
        .args(["asn1parse", "-noout", "-genstr"])
        .arg(format!("GENERALIZEDTIME:{text}"))
        .arg("-out")
        .arg(&time_der));
    let time_info = SesTime::from_der(&std::fs::read(&time_der).unwrap()).unwrap();
    assert_eq!(time_info.to_offset(), at + Duration::milliseconds(250));

    let tbs = TbsSign {
        version: 4,
        eseal: SeSeal::from_der(&f.seal()).unwrap(),
        time_info,
        data_hash: BitString::from_bytes(&Sm3::digest(DOCUMENT)).unwrap(),
        property_info: Ia5String::new(PROPERTY_INFO).unwrap(),
        ext_datas: None,
    };
    let tbs_der = tbs.to_der().unwrap();
    assert!(
        tbs_der.windows(text.len()).any(|w| w == text.as_bytes()),
        "the time travels as OpenSSL wrote it"
    );
    std::fs::write(dir.path().join("tbs.der"), &tbs_der).unwrap();
    std::fs::write(dir.path().join("key.pem"), &f.owner.key_pem).unwrap();
    run(Command::new("openssl")
        .args(["pkeyutl", "-sign", "-inkey"])
        .arg(dir.path().join("key.pem"))
        .args([
            "-rawin",
            "-digest",
            "sm3",
            "-pkeyopt",
            "distid:1234567812345678",
        ])
        .arg("-in")
        .arg(dir.path().join("tbs.der"))
        .arg("-out")
        .arg(dir.path().join("sig.der")));
    let ses = SesSignature {
        to_sign: tbs,
        cert: OctetString::new(der_of(&f.owner)).unwrap(),
        signature_alg_id: bzt_seal::OID_SM2_WITH_SM3,
        signature: BitString::from_bytes(&std::fs::read(dir.path().join("sig.der")).unwrap())
            .unwrap(),
        time_stamp: None,
    }
    .to_der()
    .unwrap();

    let sig = SealSignature::from_der(&ses).unwrap();
    assert_eq!(sig.signed_bytes().unwrap(), tbs_der);
    assert_eq!(sig.time_info().millisecond(), 250);
    let ok = verify_signature(&sig, &f.makers(), &Sm3::digest(DOCUMENT), now()).unwrap();
    assert_eq!(ok.time_info, at + Duration::milliseconds(250));
    // A DER reader other than ours agrees on the value.
    std::fs::write(dir.path().join("ses.der"), &ses).unwrap();
    let parsed = run(Command::new("openssl")
        .args(["asn1parse", "-inform", "DER", "-in"])
        .arg(dir.path().join("ses.der")));
    assert!(
        parsed.contains(&format!("GENERALIZEDTIME   :{text}")),
        "{parsed}"
    );
}
