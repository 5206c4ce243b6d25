//! The webhook's `Bzt-Signature` header (PROTOCOL.md "Webhooks"):
//! `t=<unix seconds>,v1=<hex HMAC-SHA256(webhook_secret, "<t>.<body>")>` over the exact bytes
//! received. Same rules as `verifyWebhook` in `sdk-js/node`.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How far the header's time may be from now, by default (seconds).
pub const DEFAULT_TOLERANCE_S: u64 = 300;

/// The header name.
pub const HEADER: &str = "Bzt-Signature";

fn mac(secret: &[u8], t: u64, body: &[u8]) -> Option<[u8; 32]> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac.finalize().into_bytes().into())
}

/// True when `header` is a valid signature of `body` by `secret`, made within `tolerance_s` of
/// `now_s` (unix seconds). Several `v1=` values are allowed (secret rotation); any match counts.
/// Every comparison is constant-time.
pub fn verify_at(secret: &str, header: &str, body: &[u8], tolerance_s: u64, now_s: u64) -> bool {
    if secret.is_empty() {
        return false;
    }
    let mut t: Option<u64> = None;
    let mut sigs: Vec<[u8; 32]> = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "t" => {
                if t.is_some()
                    || v.is_empty()
                    || v.len() > 15
                    || !v.bytes().all(|b| b.is_ascii_digit())
                {
                    return false;
                }
                t = v.parse().ok();
            }
            "v1" if v.len() == 64 => {
                if let Ok(bytes) = hex::decode(v) {
                    if let Ok(sig) = <[u8; 32]>::try_from(bytes.as_slice()) {
                        sigs.push(sig);
                    }
                }
            }
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if sigs.is_empty() || now_s.abs_diff(t) > tolerance_s {
        return false;
    }
    let Some(expected) = mac(secret.as_bytes(), t, body) else {
        return false;
    };
    // No early exit: every candidate is compared.
    sigs.iter()
        .fold(subtle::Choice::from(0), |ok, s| ok | s.ct_eq(&expected))
        .into()
}

/// [`verify_at`] against the system clock with [`DEFAULT_TOLERANCE_S`].
pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    verify_at(secret, header, body, DEFAULT_TOLERANCE_S, now_s())
}

/// The header the broker sends for `body` at unix time `t`. For tests and mock brokers.
pub fn sign(secret: &str, body: &[u8], t: u64) -> String {
    let sig = mac(secret.as_bytes(), t, body)
        .map(hex::encode)
        .unwrap_or_default();
    format!("t={t},v1={sig}")
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_openssl_hmac() {
        // Independent implementation: `openssl dgst -sha256 -hmac`.
        let body = r#"{"id":"s1","status":"approved","title":"开标"}"#.as_bytes();
        let t = 1_764_000_000u64;
        let mut input = format!("{t}.").into_bytes();
        input.extend_from_slice(body);
        let out = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-hmac", "whsec_test", "-r"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().expect("stdin").write_all(&input)?;
                child.wait_with_output()
            })
            .expect("openssl runs");
        let hex_mac = String::from_utf8(out.stdout).unwrap();
        let hex_mac = hex_mac.split_whitespace().next().unwrap();
        assert_eq!(sign("whsec_test", body, t), format!("t={t},v1={hex_mac}"));
        let header = format!("t={t},v1={hex_mac}");
        assert!(verify_at("whsec_test", &header, body, 300, t + 299));
    }

    #[test]
    fn wrong_secret_body_or_time_fails() {
        let body = b"{\"id\":\"s1\"}";
        let h = sign("s3cret", body, 1000);
        assert!(verify_at("s3cret", &h, body, 300, 1000));
        assert!(!verify_at("other", &h, body, 300, 1000));
        assert!(!verify_at("s3cret", &h, b"{\"id\":\"s2\"}", 300, 1000));
        assert!(!verify_at("s3cret", &h, body, 300, 1301));
        assert!(!verify_at("s3cret", &h, body, 300, 699));
        // Rotation: an unknown v1 beside the right one still verifies.
        let rotated = format!("{h},v1={}", "0".repeat(64));
        assert!(verify_at("s3cret", &rotated, body, 300, 1000));
        // Two t values, no v1, or junk: refused.
        assert!(!verify_at(
            "s3cret",
            &format!("t=1000,{h}"),
            body,
            300,
            1000
        ));
        assert!(!verify_at("s3cret", "t=1000", body, 300, 1000));
        assert!(!verify_at("s3cret", "garbage", body, 300, 1000));
        assert!(!verify_at("", &h, body, 300, 1000));
    }
}
