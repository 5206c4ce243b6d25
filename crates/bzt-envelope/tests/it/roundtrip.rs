//! Sealing and opening: recipients, sizes around chunk boundaries, the hall's re-wrap flow.

use bzt_envelope::{
    header_digest, inspect, open, open_to_path, open_to_path_with_content_key,
    open_with_content_key, parse_reply_key, read_header, seal, seal_with_content_key, unwrap_key,
    wrap_key, ContentKey, Error, Header, SealOptions, DEFAULT_CHUNK, MAX_CHUNK,
};
use sm2::SecretKey;

use crate::helpers::{body_offset, data, listing, seal_bytes, Pki, ISSUER};

#[test]
fn each_of_three_recipients_opens_byte_identical_and_a_fourth_is_named_out() {
    let pki = Pki::new(&["alice", "bob", "carol", "mallory"]);
    let plain = data(3 * DEFAULT_CHUNK as usize + 12_345);
    let sealed = seal_bytes(&pki.recipients(3), &plain, DEFAULT_CHUNK);

    for party in &pki.parties[..3] {
        let mut out = Vec::new();
        let report = open(&party.secret, &party.recipient, &sealed[..], &mut out).expect("open");
        assert!(
            out == plain,
            "{} got different bytes",
            party.recipient.serial()
        );
        assert_eq!(report.plaintext_len, plain.len() as u64);
        assert_eq!(report.chunks, 4);
    }

    let mallory = &pki.parties[3];
    let mut out = Vec::new();
    let err = open(&mallory.secret, &mallory.recipient, &sealed[..], &mut out).unwrap_err();
    match &err {
        Error::NotARecipient { recipients } => {
            let expected: Vec<(String, String)> = pki.parties[..3]
                .iter()
                .map(|p| {
                    (
                        p.recipient.serial().to_owned(),
                        p.recipient.issuer().to_owned(),
                    )
                })
                .collect();
            assert_eq!(recipients, &expected);
            assert_eq!(expected[0], ("ab01".into(), ISSUER.into()));
        }
        other => panic!("expected NotARecipient, got {other:?}"),
    }
    let message = err.to_string();
    for serial in ["ab01", "ab02", "ab03"] {
        assert!(
            message.contains(serial),
            "message {message:?} lacks {serial}"
        );
    }
    assert!(out.is_empty(), "no plaintext for a non-recipient");
}

#[test]
fn wrong_private_key_for_the_certificate_is_reported() {
    let pki = Pki::new(&["alice", "bob"]);
    let sealed = seal_bytes(&pki.recipients(2), b"bid", DEFAULT_CHUNK);
    let err = open(
        &pki.parties[0].secret,
        &pki.parties[1].recipient,
        &sealed[..],
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::KeyMismatch { ref serial, .. } if serial == "ab02"),
        "{err:?}"
    );
}

/// Every size class of the chunking rule, with a small chunk and with the default one.
#[test]
fn sizes_around_chunk_boundaries_round_trip() {
    let pki = Pki::new(&["alice"]);
    let alice = &pki.parties[0];
    for chunk in [1u32, 64, DEFAULT_CHUNK] {
        let c = chunk as usize;
        let mut sizes = vec![0, 1, c - 1, c, c + 1, 2 * c, 7 * c + 3];
        sizes.dedup();
        for len in sizes {
            let plain = data(len);
            let sealed = seal_bytes(&pki.recipients(1), &plain, chunk);
            let chunks = (len / c + 1) as u64;
            let expected_body = len + 16 * chunks as usize;
            assert_eq!(
                sealed.len() - body_offset(&sealed),
                expected_body,
                "body length for chunk {chunk}, len {len}"
            );

            let inspection = inspect(&sealed[..]).expect("inspect");
            assert_eq!(inspection.chunks, Some(chunks), "chunk {chunk}, len {len}");
            assert_eq!(inspection.plaintext_len, Some(len as u64));
            assert_eq!(inspection.file_len(), sealed.len() as u64);

            let mut out = Vec::new();
            let report = open(&alice.secret, &alice.recipient, &sealed[..], &mut out)
                .unwrap_or_else(|e| panic!("chunk {chunk}, len {len}: {e}"));
            assert!(out == plain, "chunk {chunk}, len {len}: bytes differ");
            assert_eq!(report.chunks, chunks);
        }
    }
}

#[test]
fn empty_file_is_one_empty_final_chunk() {
    let pki = Pki::new(&["alice"]);
    let sealed = seal_bytes(&pki.recipients(1), b"", DEFAULT_CHUNK);
    assert_eq!(sealed.len() - body_offset(&sealed), 16, "just one tag");
    let alice = &pki.parties[0];
    let mut out = vec![];
    let report = open(&alice.secret, &alice.recipient, &sealed[..], &mut out).expect("open");
    assert!(out.is_empty());
    assert_eq!(report.chunks, 1);
}

/// Files larger than one batch (about 2 MiB): with the largest chunk every chunk is its own
/// batch, so batch boundaries, rotation and ordering are exercised on a few MiB.
#[test]
fn multi_batch_files_round_trip_through_paths() {
    let pki = Pki::new(&["alice", "bob"]);
    let dir = tempfile::tempdir().expect("tempdir");
    for (chunk, len) in [
        (MAX_CHUNK, 2 * MAX_CHUNK as usize + 5),
        (MAX_CHUNK, 2 * MAX_CHUNK as usize),
        (4096, (5 << 19) + 100),
    ] {
        let plain = data(len);
        let sealed_path = dir.path().join("bid.bze");
        let out_path = dir.path().join("bid.out");
        let file = std::fs::File::create(&sealed_path).expect("create");
        let report = seal(
            &pki.recipients(2),
            &plain[..],
            file,
            &SealOptions { chunk_size: chunk },
        )
        .expect("seal");
        assert_eq!(report.chunks, (len / chunk as usize + 1) as u64);
        assert_eq!(
            std::fs::metadata(&sealed_path).expect("stat").len(),
            report.sealed_len
        );

        let bob = &pki.parties[1];
        let opened = open_to_path(&bob.secret, &bob.recipient, &sealed_path, &out_path)
            .unwrap_or_else(|e| panic!("chunk {chunk}, len {len}: {e}"));
        assert_eq!(opened.plaintext_len, len as u64);
        assert!(
            std::fs::read(&out_path).expect("read") == plain,
            "chunk {chunk}, len {len}"
        );
        assert_eq!(
            listing(dir.path()),
            ["bid.bze", "bid.out"],
            "no temp file left"
        );
    }
}

/// The `decrypt` flow: the phone unwraps its entry from the header alone and re-wraps the key
/// to the hall's one-time reply key; the hall opens with the content key.
#[test]
fn phone_rewraps_to_reply_key_and_hall_opens() {
    let pki = Pki::new(&["alice", "bob"]);
    let plain = data(200_000);
    let sealed = seal_bytes(&pki.recipients(2), &plain, DEFAULT_CHUNK);

    // Phone: only the header JSON.
    let (_, raw) = read_header(&sealed[..]).expect("header");
    let header = Header::from_json(&raw).expect("parse");
    let bob = &pki.parties[1];
    let entry = header
        .find_recipient(
            &bob.recipient.serial().to_uppercase(),
            bob.recipient.issuer(),
        )
        .expect("bob's entry, serial compared case-insensitively");
    assert_eq!(entry.serial(), "ab02");
    let content_key = header
        .content_key(&bob.secret, &bob.recipient)
        .expect("unwrap");

    // Hall: one-time key pair, sent as hex 04||X||Y.
    let hall_secret = SecretKey::from_slice(&[0x42; 32]).expect("scalar");
    let reply_hex = hex::encode(hall_secret.public_key().to_sec1_bytes());
    let reply_key = parse_reply_key(&reply_hex).expect("reply key");
    let wrapped = wrap_key(&reply_key, content_key.as_bytes()).expect("wrap");

    let hall_key = ContentKey::from_slice(&unwrap_key(&hall_secret, &wrapped).expect("unwrap"))
        .expect("16 bytes");
    let mut out = Vec::new();
    open_with_content_key(&hall_key, &sealed[..], &mut out).expect("hall opens");
    assert!(out == plain);

    let dir = tempfile::tempdir().expect("tempdir");
    let in_path = dir.path().join("bid.bze");
    std::fs::write(&in_path, &sealed).expect("write");
    open_to_path_with_content_key(&hall_key, &in_path, dir.path().join("bid.pdf")).expect("open");
    assert!(std::fs::read(dir.path().join("bid.pdf")).expect("read") == plain);

    // A different content key does not open it.
    let wrong = ContentKey::from_slice(&[9; 16]).expect("key");
    let err = open_with_content_key(&wrong, &sealed[..], &mut Vec::new()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { chunk: 0 }), "{err:?}");
}

#[test]
fn seal_with_content_key_uses_that_key_and_reports_the_header_digest() {
    let pki = Pki::new(&["alice"]);
    let key = ContentKey::from_slice(&[7; 16]).expect("key");
    let mut sealed = Vec::new();
    let report = seal_with_content_key(
        &pki.recipients(1),
        &key,
        &b"hello"[..],
        &mut sealed,
        &SealOptions::default(),
    )
    .expect("seal");
    let (header, raw) = read_header(&sealed[..]).expect("header");
    assert_eq!(report.header_digest, header_digest(&raw));
    assert_eq!(report.sealed_len, sealed.len() as u64);
    assert_eq!(header.chunk_size(), DEFAULT_CHUNK);
    let alice = &pki.parties[0];
    assert_eq!(
        header
            .content_key(&alice.secret, &alice.recipient)
            .expect("unwrap")
            .as_bytes(),
        key.as_bytes()
    );
    let mut out = Vec::new();
    open_with_content_key(&key, &sealed[..], &mut out).expect("open");
    assert_eq!(out, b"hello");
}

#[test]
fn header_is_the_documented_json() {
    let pki = Pki::new(&["alice", "bob"]);
    let sealed = seal_bytes(&pki.recipients(2), b"x", DEFAULT_CHUNK);
    assert_eq!(&sealed[..4], b"BZE1");
    let raw = &sealed[8..body_offset(&sealed)];
    let json: serde_json::Value = serde_json::from_slice(raw).expect("JSON");
    let keys: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(|k| k.as_str())
        .collect();
    let mut expected = ["v", "alg", "chunk", "nonce_prefix_b64", "recipients"];
    expected.sort();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort();
    assert_eq!(keys_sorted, expected);
    assert_eq!(json["v"], 1);
    assert_eq!(json["alg"], "SM4-GCM-STREAM");
    assert_eq!(json["chunk"], 65536);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let prefix = b64
        .decode(json["nonce_prefix_b64"].as_str().expect("str"))
        .expect("b64");
    assert_eq!(prefix.len(), 7);
    let r = &json["recipients"][1];
    assert_eq!(r["serial"], "ab02");
    assert_eq!(r["issuer"], ISSUER);
    let wrapped = b64
        .decode(r["key_b64"].as_str().expect("str"))
        .expect("b64");
    assert_eq!(wrapped[0], 0x30, "GM/T 0009 DER SEQUENCE");

    // Two seals of the same input differ (fresh key and nonce prefix).
    let again = seal_bytes(&pki.recipients(2), b"x", DEFAULT_CHUNK);
    assert_ne!(sealed, again);
}

#[test]
fn seal_refuses_bad_arguments() {
    let pki = Pki::new(&["alice"]);
    let opts = |chunk_size| SealOptions { chunk_size };
    let err = seal(&[], &b"x"[..], Vec::new(), &opts(DEFAULT_CHUNK)).unwrap_err();
    assert!(matches!(err, Error::NoRecipients), "{err:?}");
    for bad in [0, MAX_CHUNK + 1] {
        let err = seal(&pki.recipients(1), &b"x"[..], Vec::new(), &opts(bad)).unwrap_err();
        assert!(matches!(err, Error::BadChunkSize(_)), "{err:?}");
    }

    // The same certificate twice is written once.
    let alice = pki.parties[0].recipient.clone();
    let sealed = seal_bytes(&[alice.clone(), alice.clone()], b"x", DEFAULT_CHUNK);
    let (header, _) = read_header(&sealed[..]).expect("header");
    assert_eq!(header.recipients().len(), 1);

    // Another key under the same serial and issuer is refused.
    let other = SecretKey::from_slice(&[0x11; 32])
        .expect("scalar")
        .public_key();
    let impostor =
        bzt_envelope::Recipient::new(alice.serial(), alice.issuer(), other).expect("recipient");
    let err = seal(
        &[alice, impostor],
        &b"x"[..],
        Vec::new(),
        &opts(DEFAULT_CHUNK),
    )
    .unwrap_err();
    assert!(matches!(err, Error::DuplicateRecipient { .. }), "{err:?}");
}
