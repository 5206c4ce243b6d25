//! The audit trail of certificate use (证书使用记录, 操作追溯): the record
//! format and the tamper-evidence rules. Storage lives elsewhere.
//!
//! Each record is one JSON line. It carries its sequence number, the SM3 of
//! the previous record (`prev`) and its own SM3 (`hash`, over the record's
//! JSON without `hash`). At intervals the log appends a *checkpoint*: the
//! broker's SM2 signature over the chain head. So:
//! - editing a record breaks its own `hash`;
//! - deleting or reordering records breaks `seq` and `prev`;
//! - rewriting the whole tail consistently still breaks the next
//!   checkpoint's signature, which only the broker's key can make.
//!
//! [`verify_lines`] checks all of it and names the first bad record.

use crate::pki::{sm3_hex, DEFAULT_DIST_ID};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use sm2::dsa::signature::{Signer, Verifier};
use sm2::dsa::{Signature, SigningKey, VerifyingKey};

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One use of a certificate: a completed session, an answered conversation
/// request, or an operator's revocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = AuditOperation))]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// The app whose session or conversation it was.
    pub app: String,
    /// `login`, `bind`, `sign`, `encrypt`, `decrypt`, `conversation_request` or `revocation`.
    pub kind: String,
    /// The session (for a conversation request, the session that opened the conversation).
    pub session_id: String,
    /// `conversation_request` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// `conversation_request` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The certificate used; empty when none was verified (a rejection).
    #[cfg_attr(feature = "openapi", schema(pattern = "^(|0|[1-9a-f][0-9a-f]*)$"))]
    pub cert_serial: String,
    pub cert_issuer: String,
    pub cert_subject: String,
    /// Lowercase hex SM3 of the bytes signed, or offered for signing.
    #[cfg_attr(feature = "openapi", schema(pattern = "^([0-9a-f]{64})?$"))]
    pub tbs_sm3: String,
    /// `approved`, `rejected`, `failed`, `aborted` (a record written before a
    /// transition that then did not happen), `revoked` or `lifted`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `conversation_request` only: as the phone sent it (`true`: signed
    /// without a tap, 自动确认).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_confirmed: Option<bool>,
    /// The phone's device name from its claim.
    pub device_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_user_agent: Option<String>,
    /// `revocation` only: who revoked or lifted, as the operator gave it
    /// (`revoked_by`). Absent on phone operations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The member who signed with a granted company certificate (企业证书授权),
    /// as the co-signing service named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<bzt_wire::Delegate>))]
    pub delegate: Option<crate::session::Delegate>,
}

/// The broker's signature over the chain head.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = AuditCheckpoint))]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// SEC1 uncompressed public key of the broker's audit key, hex.
    #[cfg_attr(feature = "openapi", schema(pattern = "^04[0-9a-f]{128}$"))]
    pub public_key: String,
    /// DER SM2 signature (SM3, default ID), base64, over the text
    /// `BZT-AUDIT-CHECKPOINT-V1\nseq:<seq>\nhead:<prev>` (`checkpoint_message`).
    pub signature_b64: String,
}

/// What a record tells: an operation or a checkpoint (`type`). The API
/// answers operations only.
// Records are built one at a time and written at once; boxing the larger
// variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = AuditEvent))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Operation(Operation),
    Checkpoint(Checkpoint),
}

/// A record without its own hash: what the hash is computed over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = AuditRecordBody))]
pub struct RecordBody {
    /// Position in the whole log (all apps, checkpoints included).
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub seq: u64,
    /// When the record was written (before the outcome was told to anyone).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub time: Timestamp,
    /// SM3 of the previous record of the log (64 zeros for the first).
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub prev: String,
    #[serde(flatten)]
    pub event: Event,
}

/// A record as written: the body and its SM3. `GET /v1/audit` answers these
/// exactly as written (operations only), so a reader can recompute `hash`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = AuditRecord))]
pub struct Record {
    #[serde(flatten)]
    pub body: RecordBody,
    /// SM3 of this record's JSON without `hash`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{64}$"))]
    pub hash: String,
}

impl RecordBody {
    /// The SM3 a sealed record carries as its `hash`.
    pub fn digest(&self) -> String {
        sm3_hex(&serde_json::to_vec(self).unwrap_or_default())
    }

    /// Seals the body with its hash.
    pub fn seal(self) -> Record {
        let hash = self.digest();
        Record { body: self, hash }
    }
}

impl Record {
    /// The JSON line (without newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn operation(&self) -> Option<&Operation> {
        match &self.body.event {
            Event::Operation(op) => Some(op),
            Event::Checkpoint(_) => None,
        }
    }
}

/// What a checkpoint signs.
pub fn checkpoint_message(seq: u64, head: &str) -> String {
    format!("BZT-AUDIT-CHECKPOINT-V1\nseq:{seq}\nhead:{head}")
}

/// A checkpoint record body for the chain whose last hash is `head`.
pub fn checkpoint(seq: u64, time: Timestamp, head: &str, key: &SigningKey) -> RecordBody {
    let signature: Signature = key.sign(checkpoint_message(seq, head).as_bytes());
    let public_key = hex::encode(key.verifying_key().to_sec1_bytes());
    RecordBody {
        seq,
        time,
        prev: head.to_owned(),
        event: Event::Checkpoint(Checkpoint {
            public_key,
            signature_b64: crate::codec::encode(&signature.to_der().to_bytes()),
        }),
    }
}

/// Whether a checkpoint at `seq` is a valid signature, by the key it names,
/// over the chain head `head` (the hash of the record before it). Which key
/// it must be is the caller's question.
pub fn checkpoint_verifies(cp: &Checkpoint, seq: u64, head: &str) -> bool {
    hex::decode(&cp.public_key)
        .ok()
        .and_then(|k| VerifyingKey::from_sec1_bytes(DEFAULT_DIST_ID, &k).ok())
        .zip(
            crate::codec::decode(&cp.signature_b64)
                .ok()
                .and_then(|d| Signature::from_der(&d).ok()),
        )
        .is_some_and(|(key, sig)| {
            key.verify(checkpoint_message(seq, head).as_bytes(), &sig)
                .is_ok()
        })
}

/// The outcome of checking a whole log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub checkpoints: u64,
    /// Hash of the last record.
    pub head: String,
    /// Operations after the last checkpoint (chained, not yet signed).
    pub unsigned_tail: u64,
}

/// The first problem found: which record (1-based line) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub line: u64,
    pub seq: Option<u64>,
    pub reason: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "record seq {seq} (line {}): {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

/// Checks a log line by line. `expected_key` (SEC1 hex) pins the broker's
/// key; without it, every checkpoint must at least use the same key as the
/// first one.
pub fn verify_lines<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    expected_key: Option<&str>,
) -> Result<Verified, Broken> {
    let mut head = GENESIS.to_owned();
    let mut seq = 0u64;
    let mut checkpoints = 0u64;
    let mut unsigned_tail = 0u64;
    let mut pinned: Option<String> = expected_key.map(|k| k.to_ascii_lowercase());
    for (i, line) in lines.into_iter().enumerate() {
        let line_no = i as u64 + 1;
        if line.trim().is_empty() {
            return Err(Broken {
                line: line_no,
                seq: None,
                reason: "empty line".into(),
            });
        }
        let record: Record = serde_json::from_str(line).map_err(|e| Broken {
            line: line_no,
            seq: None,
            reason: format!("not a valid audit record: {e}"),
        })?;
        let bad = |reason: String| Broken {
            line: line_no,
            seq: Some(record.body.seq),
            reason,
        };
        if record.body.seq != seq + 1 {
            return Err(bad(format!(
                "expected seq {}, found {} (a record was removed or reordered)",
                seq + 1,
                record.body.seq
            )));
        }
        if record.body.digest() != record.hash {
            return Err(bad(
                "its content does not match its hash (the record was edited)".into(),
            ));
        }
        if record.body.prev != head {
            return Err(bad(
                "its prev hash does not match the record before it".into()
            ));
        }
        match &record.body.event {
            Event::Operation(_) => unsigned_tail += 1,
            Event::Checkpoint(cp) => {
                let key_hex = cp.public_key.to_ascii_lowercase();
                match &pinned {
                    Some(k) if *k != key_hex => {
                        return Err(bad(
                            "the checkpoint is signed by another key than the broker's".into(),
                        ))
                    }
                    Some(_) => {}
                    None => pinned = Some(key_hex.clone()),
                }
                if !checkpoint_verifies(cp, record.body.seq, &head) {
                    return Err(bad("the checkpoint signature does not verify".into()));
                }
                checkpoints += 1;
                unsigned_tail = 0;
            }
        }
        head = record.hash.clone();
        seq = record.body.seq;
    }
    Ok(Verified {
        records: seq,
        checkpoints,
        head,
        unsigned_tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(n: u32) -> Event {
        Event::Operation(Operation {
            app: "demo".into(),
            kind: "sign".into(),
            session_id: format!("s{n}"),
            conversation_id: None,
            request_id: None,
            cert_serial: "abc".into(),
            cert_issuer: "CN=CA".into(),
            cert_subject: "CN=张三".into(),
            tbs_sm3: sm3_hex(format!("page {n}").as_bytes()),
            outcome: "approved".into(),
            reason: None,
            auto_confirmed: Some(n.is_multiple_of(2)),
            device_name: "phone".into(),
            requester_ip: Some("10.0.0.1".into()),
            requester_user_agent: None,
            actor: None,
            delegate: None,
        })
    }

    fn log(n: u32, key: &SigningKey) -> Vec<String> {
        let mut head = GENESIS.to_owned();
        let mut lines = Vec::new();
        let mut seq = 0;
        for i in 1..=n {
            seq += 1;
            let r = RecordBody {
                seq,
                time: Timestamp::from_unix_millis(i64::from(i)),
                prev: head.clone(),
                event: op(i),
            }
            .seal();
            head = r.hash.clone();
            lines.push(r.to_line());
            if i % 3 == 0 {
                seq += 1;
                let c =
                    checkpoint(seq, Timestamp::from_unix_millis(i64::from(i)), &head, key).seal();
                head = c.hash.clone();
                lines.push(c.to_line());
            }
        }
        lines
    }

    fn key() -> SigningKey {
        use sm2::elliptic_curve::Generate;
        let secret = sm2::SecretKey::try_generate().unwrap();
        SigningKey::new(DEFAULT_DIST_ID, &secret).unwrap()
    }

    #[test]
    fn an_intact_log_verifies() {
        let k = key();
        let lines = log(7, &k);
        let v = verify_lines(lines.iter().map(String::as_str), None).unwrap();
        assert_eq!((v.records, v.checkpoints, v.unsigned_tail), (9, 2, 1));
        let pinned = hex::encode(k.verifying_key().to_sec1_bytes());
        assert!(verify_lines(lines.iter().map(String::as_str), Some(&pinned)).is_ok());
        let other = hex::encode(key().verifying_key().to_sec1_bytes());
        let e = verify_lines(lines.iter().map(String::as_str), Some(&other)).unwrap_err();
        assert!(e.reason.contains("another key"), "{e}");
    }

    #[test]
    fn an_edited_record_is_named() {
        let lines = log(7, &key());
        let mut edited = lines.clone();
        edited[4] = edited[4].replace("\"auto_confirmed\":true", "\"auto_confirmed\":false");
        assert_ne!(edited[4], lines[4]);
        let e = verify_lines(edited.iter().map(String::as_str), None).unwrap_err();
        assert_eq!((e.line, e.seq), (5, Some(5)));
        assert!(e.reason.contains("edited"), "{e}");
    }

    #[test]
    fn a_deleted_record_is_named() {
        let mut lines = log(7, &key());
        lines.remove(3);
        let e = verify_lines(lines.iter().map(String::as_str), None).unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.reason.contains("expected seq 4"), "{e}");
    }

    #[test]
    fn a_consistently_rewritten_tail_fails_at_the_checkpoint() {
        let k = key();
        let lines = log(6, &k);
        // Rewrite record 5 and re-chain everything after it, without the key.
        let mut records: Vec<Record> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if let Event::Operation(op) = &mut records[4].body.event {
            op.outcome = "rejected".into();
        }
        let mut head = records[3].hash.clone();
        for r in records.iter_mut().skip(4) {
            r.body.prev = head.clone();
            *r = r.body.clone().seal();
            head = r.hash.clone();
        }
        let rewritten: Vec<String> = records.iter().map(Record::to_line).collect();
        let e = verify_lines(rewritten.iter().map(String::as_str), None).unwrap_err();
        assert!(e.reason.contains("signature"), "{e}");
        assert_eq!(e.seq, Some(8));
    }
}
