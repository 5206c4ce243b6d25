//! A one-page OFD with a seal signature: Python's `zipfile` and `xml.etree` read the archive, every
//! `CheckValue` is the SM3 (OpenSSL's, through `hashlib`) of the file it names, and
//! `SignedValue.dat` verifies as a seal signature over the SM3 of `Signature.xml`.

use bzt_devca::{DevCa, LeafSpec};
use bzt_seal::ofd::{OnePageOfd, StampBox, PROPERTY_INFO};
use bzt_seal::{
    make_seal, sign_with_seal, verify_signature, Picture, SealSignature, SealSpec, SealType,
};
use sm3::{Digest, Sm3};
use std::process::Command;
use time::{Duration, OffsetDateTime};
use x509_cert::der::Encode;

const CHECK: &str = r#"
import base64, hashlib, sys, zipfile, xml.etree.ElementTree as ET
z = zipfile.ZipFile(sys.argv[1])
assert z.testzip() is None
names = z.namelist()
ns = {"ofd": "http://www.ofdspec.org/2016"}
for n in names:
    if n.endswith(".xml"):
        ET.fromstring(z.read(n))
root = ET.fromstring(z.read("OFD.xml"))
assert root.find("ofd:DocBody/ofd:Signatures", ns).text == "Doc_0/Signs/Signatures.xml"
sigs = ET.fromstring(z.read("Doc_0/Signs/Signatures.xml"))
assert sigs.find("ofd:Signature", ns).get("BaseLoc") == "Sign_0/Signature.xml"
sig = ET.fromstring(z.read("Doc_0/Signs/Sign_0/Signature.xml"))
refs = sig.findall("ofd:SignedInfo/ofd:References/ofd:Reference", ns)
assert len(refs) == 4, len(refs)
for r in refs:
    data = z.read(r.get("FileRef").lstrip("/"))
    want = base64.b64encode(hashlib.new("sm3", data).digest()).decode()
    assert r.find("ofd:CheckValue", ns).text == want, r.get("FileRef")
assert sig.find("ofd:SignedValue", ns).text == "/Doc_0/Signs/Sign_0/SignedValue.dat"
print(hashlib.new("sm3", z.read("Doc_0/Signs/Sign_0/Signature.xml")).hexdigest())
print(" ".join(names))
"#;

#[test]
fn a_one_page_ofd_carries_the_seal_signature_over_its_signature_xml() {
    let maker = DevCa::generate("制章系统", "bzt", "platform").unwrap();
    let owner = maker
        .issue(&LeafSpec::new("示例建设有限公司", "示例建设有限公司"))
        .unwrap();
    let owner_der = owner.certificate().unwrap().to_der().unwrap();
    let now = OffsetDateTime::now_utc();
    let seal = make_seal(
        &SealSpec {
            es_id: "OFD0001".into(),
            seal_type: SealType::Company,
            name: "示例建设有限公司".into(),
            owner_certs: vec![owner_der.clone()],
            created: now,
            valid_start: now - Duration::days(1),
            valid_end: now + Duration::days(30),
            picture: Picture {
                picture_type: "PNG".into(),
                data: b"\x89PNG\r\n\x1a\n".to_vec(),
                width_mm: 40,
                height_mm: 40,
            },
        },
        &maker.certificate().to_der().unwrap(),
        maker.signing_key(),
    )
    .unwrap();

    let doc = OnePageOfd::new(
        "投标函",
        &[
            "致：示例招标人",
            "投标报价：人民币壹仟贰佰叁拾肆万元整 & <工期 180 天>",
        ],
        StampBox {
            x_mm: 120.0,
            y_mm: 80.0,
            width_mm: 40.0,
            height_mm: 40.0,
        },
        now,
    );
    let hash = doc.data_hash();
    assert_eq!(hash, <[u8; 32]>::from(Sm3::digest(doc.signature_xml())));
    let key =
        bzt_devca::signing_key(&bzt_devca::key_from_pem(&owner.key_pem, None).unwrap()).unwrap();
    let ses = sign_with_seal(&seal, &owner_der, &key, &hash, PROPERTY_INFO, now).unwrap();
    let ofd = doc.finish(&ses);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("投标函.ofd");
    std::fs::write(&file, &ofd).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(CHECK)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(hex::encode(hash).as_str()),
        "Python's SM3 of Signature.xml"
    );
    let names: Vec<&str> = lines.next().unwrap().split(' ').collect();
    assert!(
        names.contains(&"Doc_0/Signs/Sign_0/SignedValue.dat"),
        "{names:?}"
    );

    // SignedValue.dat is the seal signature, and it protects Signature.xml.
    let sig = SealSignature::from_der(&ses).unwrap();
    assert_eq!(sig.property_info(), PROPERTY_INFO);
    verify_signature(&sig, &[maker.certificate().clone()], &hash, now).unwrap();
    assert!(ofd.windows(ses.len()).any(|w| w == ses.as_slice()));
}
