//! Damaged files: every failure is detected, and `open_to_path` leaves nothing behind.

use std::path::Path;

use bzt_envelope::{
    open, open_to_path, open_to_path_with_content_key, open_with_content_key, read_header,
    ContentKey, Error,
};

use crate::helpers::{body_offset, data, listing, seal_bytes, Party, Pki};

const CHUNK: u32 = 64;
const SLOT: usize = CHUNK as usize + 16;

/// What a test opens with. Damage after the header is checked with the content key, which
/// exercises the same body code without an SM2 decryption per case (slow in debug builds).
#[derive(Clone, Copy)]
enum Key<'a> {
    Party(&'a Party),
    Content(&'a ContentKey),
}

/// Opens `file` both ways and returns the error; checks that `open_to_path` left the output
/// directory exactly as it was (no output, no temp file) and that streaming `open` released
/// only a prefix of the genuine plaintext.
fn open_fails(key: Key<'_>, file: &[u8], plain: &[u8], what: &str) -> Error {
    let input_dir = tempfile::tempdir().expect("tempdir");
    let in_path = input_dir.path().join("bid.bze");
    std::fs::write(&in_path, file).expect("write");
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out_path = out_dir.path().join("bid.pdf");

    let to_path = match key {
        Key::Party(p) => open_to_path(&p.secret, &p.recipient, &in_path, &out_path),
        Key::Content(k) => open_to_path_with_content_key(k, &in_path, &out_path),
    };
    let err = match to_path {
        Ok(_) => panic!("{what}: open_to_path accepted a damaged file"),
        Err(e) => e,
    };
    assert_eq!(
        listing(out_dir.path()),
        Vec::<String>::new(),
        "{what}: left files behind"
    );

    let mut out = Vec::new();
    let streamed = match key {
        Key::Party(p) => open(&p.secret, &p.recipient, file, &mut out),
        Key::Content(k) => open_with_content_key(k, file, &mut out),
    };
    assert!(streamed.is_err(), "{what}: open accepted a damaged file");
    assert!(
        plain.starts_with(&out),
        "{what}: released bytes that are not genuine plaintext"
    );
    err
}

/// Alice's content key of a sealed file.
fn content_key(party: &Party, sealed: &[u8]) -> ContentKey {
    let (header, _) = read_header(sealed).expect("header");
    header
        .content_key(&party.secret, &party.recipient)
        .expect("content key")
}

fn fixture() -> (Pki, Vec<u8>, Vec<u8>) {
    let pki = Pki::new(&["alice", "bob"]);
    let plain = data(5 * CHUNK as usize + 20); // 6 chunks, the last one 20 bytes
    let sealed = seal_bytes(&pki.recipients(2), &plain, CHUNK);
    (pki, plain, sealed)
}

fn chunk_range(file: &[u8], i: usize) -> std::ops::Range<usize> {
    let start = body_offset(file) + i * SLOT;
    start..(start + SLOT).min(file.len())
}

#[test]
fn every_flipped_bit_anywhere_is_detected() {
    let (pki, plain, sealed) = fixture();
    let alice = &pki.parties[0];
    let key = content_key(alice, &sealed);
    let body = body_offset(&sealed);
    for pos in 0..sealed.len() {
        // One bit per byte, cycling through the eight bit positions.
        let bit = 1u8 << (pos % 8);
        let mut bad = sealed.clone();
        bad[pos] ^= bit;
        let opener = if pos < body {
            Key::Party(alice)
        } else {
            Key::Content(&key)
        };
        let err = open_fails(opener, &bad, &plain, &format!("bit {bit:#x} of byte {pos}"));
        if pos >= body {
            let chunk = ((pos - body) / SLOT) as u64;
            assert!(
                matches!(err, Error::Corrupt { chunk: c } if c == chunk),
                "byte {pos}: expected Corrupt in chunk {chunk}, got {err:?}"
            );
        }
    }
}

#[test]
fn header_changes_fail_all_chunks_or_the_header() {
    let (pki, plain, sealed) = fixture();
    let alice = &pki.parties[0];
    let raw = String::from_utf8(sealed[8..body_offset(&sealed)].to_vec()).expect("utf-8");

    // Re-frame a modified header in front of the original body.
    let reframe = |json: &str| {
        let mut f = b"BZE1".to_vec();
        f.extend_from_slice(&(json.len() as u32).to_be_bytes());
        f.extend_from_slice(json.as_bytes());
        f.extend_from_slice(&sealed[body_offset(&sealed)..]);
        f
    };
    // Dropping Bob from the recipients, or adding a field, is still valid JSON, but the
    // header digest changes, so chunk 0 fails.
    let bob_entry_start = raw.find(r#",{"serial":"ab02""#).expect("bob's entry");
    let bob_entry_end = raw[bob_entry_start..].find('}').expect("end") + bob_entry_start + 1;
    let without_bob = format!("{}{}", &raw[..bob_entry_start], &raw[bob_entry_end..]);
    let err = open_fails(
        Key::Party(alice),
        &reframe(&without_bob),
        &plain,
        "recipient removed",
    );
    assert!(matches!(err, Error::Corrupt { chunk: 0 }), "{err:?}");

    let extra = raw.replacen('{', r#"{"note":"x","#, 1);
    let err = open_fails(Key::Party(alice), &reframe(&extra), &plain, "field added");
    assert!(matches!(err, Error::Corrupt { chunk: 0 }), "{err:?}");

    let spaced = raw.replacen(',', ", ", 1);
    let err = open_fails(
        Key::Party(alice),
        &reframe(&spaced),
        &plain,
        "whitespace added",
    );
    assert!(matches!(err, Error::Corrupt { chunk: 0 }), "{err:?}");

    // A bigger chunk size in the header misreads the body.
    let rechunked = raw.replacen(r#""chunk":64"#, r#""chunk":80"#, 1);
    open_fails(
        Key::Party(alice),
        &reframe(&rechunked),
        &plain,
        "chunk size changed",
    );

    let mut not_envelope = sealed.clone();
    not_envelope[..4].copy_from_slice(b"BZE2");
    let err = open_fails(Key::Party(alice), &not_envelope, &plain, "magic");
    assert!(matches!(err, Error::NotAnEnvelope), "{err:?}");

    let mut long = sealed.clone();
    long[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    let err = open_fails(Key::Party(alice), &long, &plain, "header length");
    assert!(matches!(err, Error::BadHeader(_)), "{err:?}");
}

#[test]
fn truncation_anywhere_is_detected() {
    let (pki, plain, sealed) = fixture();
    let alice = &pki.parties[0];
    let key = content_key(alice, &sealed);
    let body = body_offset(&sealed);
    for len in 0..sealed.len() {
        let opener = if len < body {
            Key::Party(alice)
        } else {
            Key::Content(&key)
        };
        let err = open_fails(
            opener,
            &sealed[..len],
            &plain,
            &format!("cut to {len} bytes"),
        );
        let at_chunk_boundary = len >= body && (len - body) % SLOT < 16;
        if len < 8 {
            assert!(
                matches!(err, Error::Truncated(_) | Error::NotAnEnvelope),
                "cut to {len}: {err:?}"
            );
        } else if len < body || at_chunk_boundary {
            assert!(matches!(err, Error::Truncated(_)), "cut to {len}: {err:?}");
        } else {
            assert!(
                matches!(err, Error::Corrupt { .. }),
                "cut to {len}: {err:?}"
            );
        }
    }
}

#[test]
fn reordered_dropped_or_repeated_chunks_are_detected() {
    let (pki, plain, sealed) = fixture();
    let alice = &pki.parties[0];
    let body = body_offset(&sealed);
    let chunks: Vec<&[u8]> = (0..6).map(|i| &sealed[chunk_range(&sealed, i)]).collect();
    let assemble = |order: &[usize]| {
        let mut f = sealed[..body].to_vec();
        for &i in order {
            f.extend_from_slice(chunks[i]);
        }
        f
    };
    // Sanity: the natural order opens.
    let mut out = Vec::new();
    open(
        &alice.secret,
        &alice.recipient,
        &assemble(&[0, 1, 2, 3, 4, 5])[..],
        &mut out,
    )
    .expect("natural order opens");
    assert_eq!(out, plain);

    let cases: &[(&[usize], u64)] = &[
        (&[1, 0, 2, 3, 4, 5], 0),
        (&[0, 1, 3, 2, 4, 5], 2),
        (&[0, 2, 3, 4, 5], 1),
        (&[0, 1, 1, 2, 3, 4, 5], 2),
        (&[0, 1, 2, 3, 5], 4), // the final chunk where chunk 4 should be: wrong index
    ];
    for (order, failing) in cases {
        let err = open_fails(
            Key::Party(alice),
            &assemble(order),
            &plain,
            &format!("order {order:?}"),
        );
        assert!(
            matches!(err, Error::Corrupt { chunk } if chunk == *failing),
            "order {order:?}: {err:?}"
        );
    }
    // Dropping the final chunk leaves a body of full chunks only.
    let err = open_fails(
        Key::Party(alice),
        &assemble(&[0, 1, 2, 3, 4]),
        &plain,
        "final chunk dropped",
    );
    assert!(matches!(err, Error::Truncated(_)), "{err:?}");
}

#[test]
fn trailing_bytes_are_detected() {
    let (pki, plain, sealed) = fixture();
    let alice = &pki.parties[0];
    for extra in [1usize, 15, 16, 17, SLOT - 20, SLOT, 3 * SLOT + 7] {
        let mut bad = sealed.clone();
        bad.extend(std::iter::repeat_n(0u8, extra));
        let err = open_fails(
            Key::Party(alice),
            &bad,
            &plain,
            &format!("{extra} zero bytes appended"),
        );
        // The final chunk, lengthened, fails.
        assert!(
            matches!(err, Error::Corrupt { chunk: 5 }),
            "{extra} bytes: {err:?}"
        );
    }
    // A copy of the final chunk appended, and the whole file appended to itself.
    let mut bad = sealed.clone();
    bad.extend_from_slice(&sealed[chunk_range(&sealed, 5)]);
    let err = open_fails(Key::Party(alice), &bad, &plain, "final chunk repeated");
    assert!(matches!(err, Error::Corrupt { chunk: 5 }), "{err:?}");
    let doubled = [sealed.clone(), sealed.clone()].concat();
    let err = open_fails(
        Key::Party(alice),
        &doubled,
        &plain,
        "file appended to itself",
    );
    assert!(matches!(err, Error::Corrupt { chunk: 5 }), "{err:?}");
}

/// Same guarantees for an empty plaintext (one empty final chunk) and a file that ends on a
/// chunk boundary (an empty final chunk after full ones).
#[test]
fn empty_final_chunks_cannot_be_dropped_or_padded() {
    let pki = Pki::new(&["alice"]);
    let alice = &pki.parties[0];
    for len in [0, 2 * CHUNK as usize] {
        let plain = data(len);
        let sealed = seal_bytes(&pki.recipients(1), &plain, CHUNK);
        let body = body_offset(&sealed);
        let without_final = &sealed[..sealed.len() - 16];
        let err = open_fails(
            Key::Party(alice),
            without_final,
            &plain,
            &format!("len {len}: final dropped"),
        );
        assert!(matches!(err, Error::Truncated(_)), "{err:?}");

        let mut padded = sealed.clone();
        padded.push(0);
        let what = format!("len {len}: one byte appended");
        let err = open_fails(Key::Party(alice), &padded, &plain, &what);
        let final_chunk = (len / CHUNK as usize) as u64;
        assert!(
            matches!(err, Error::Corrupt { chunk } if chunk == final_chunk),
            "{err:?}"
        );

        // A full chunk relabelled as final is rejected (its nonce says "not last").
        if len > 0 {
            let relabelled = &sealed[..body + SLOT];
            open_fails(Key::Party(alice), relabelled, &plain, "full chunk as final");
        }
    }
}

#[test]
fn a_failed_open_to_path_keeps_an_existing_output_and_leaves_no_temp_file() {
    let (pki, _, sealed) = fixture();
    let alice = &pki.parties[0];
    let dir = tempfile::tempdir().expect("tempdir");
    let in_path = dir.path().join("bid.bze");
    let out_path = dir.path().join("bid.pdf");
    std::fs::write(&out_path, b"previous").expect("write");
    let mut bad = sealed.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&in_path, &bad).expect("write");
    let err = open_to_path(&alice.secret, &alice.recipient, &in_path, &out_path).unwrap_err();
    assert!(matches!(err, Error::Corrupt { chunk: 5 }), "{err:?}");
    assert_eq!(std::fs::read(&out_path).expect("read"), b"previous");
    assert_eq!(listing(dir.path()), ["bid.bze", "bid.pdf"]);
    assert!(!Path::new(&dir.path().join("bid.pdf.part")).exists());
}
