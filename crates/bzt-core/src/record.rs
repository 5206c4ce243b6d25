//! What a record store needs to know of a stored record, and nothing of how
//! it is stored: its id, its revision, its next deadline and how long it must
//! be kept. Sessions and conversations implement it; the broker's record
//! stores (memory, Redis) are written once against it.

use crate::conversation::Conversation;
use crate::secret::{ConversationId, SessionId};
use crate::session::Session;
use crate::time::Timestamp;
use std::fmt;
use std::hash::Hash;

/// The id of a stored record: printable, and parsed back from what it prints.
pub trait RecordId:
    Clone + Eq + Hash + Ord + fmt::Display + fmt::Debug + Send + Sync + 'static
{
    fn as_str(&self) -> &str;
    fn parse(s: &str) -> Option<Self>;
}

/// A queue of due times of one record type (a record's next deadline; a
/// session's next QR rotation). The name tells queues apart in a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DueQueue(pub &'static str);

/// A record kept in a record store.
pub trait StoredRecord:
    Clone + fmt::Debug + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static
{
    type Id: RecordId;
    /// What it is, for logs and errors ("session", "conversation").
    const KIND: &'static str;
    /// A short name of the kind, unique among record types, for a shared
    /// store's key names ("s", "c").
    const TAG: &'static str;
    /// The queue of [`StoredRecord::next_deadline`], which the store keeps.
    const DEADLINES: DueQueue;
    /// Further queues whose due times the caller schedules (a session's QR
    /// rotations); the store forgets them with the record.
    const OTHER_QUEUES: &'static [DueQueue] = &[];

    fn id(&self) -> &Self::Id;
    /// Moves on with every change, and only then.
    fn rev(&self) -> u64;
    /// When the record was made.
    fn created_at(&self) -> Timestamp;
    /// The next moment something falls due for it; `None` once nothing will.
    fn next_deadline(&self) -> Option<Timestamp>;
    /// The record must be kept until this moment plus the protocol's
    /// retention (`max(expires_at, end)`).
    fn kept_from(&self) -> Timestamp;
}

macro_rules! record_id {
    ($($id:ty),*) => {$(
        impl RecordId for $id {
            fn as_str(&self) -> &str {
                <$id>::as_str(self)
            }
            fn parse(s: &str) -> Option<Self> {
                <$id>::parse(s)
            }
        }
    )*};
}
record_id!(SessionId, ConversationId);

/// A session's QR rotations (the caller schedules them).
pub const SESSION_ROTATIONS: DueQueue = DueQueue("rot");

impl StoredRecord for Session {
    type Id = SessionId;
    const KIND: &'static str = "session";
    const TAG: &'static str = "s";
    const DEADLINES: DueQueue = DueQueue("due");
    const OTHER_QUEUES: &'static [DueQueue] = &[SESSION_ROTATIONS];

    fn id(&self) -> &SessionId {
        &self.id
    }
    fn rev(&self) -> u64 {
        self.rev
    }
    fn created_at(&self) -> Timestamp {
        self.created_at
    }
    /// Its expiry, until it ended.
    fn next_deadline(&self) -> Option<Timestamp> {
        (!self.is_terminal()).then_some(self.expires_at)
    }
    fn kept_from(&self) -> Timestamp {
        self.completed_at
            .map_or(self.expires_at, |c| c.max(self.expires_at))
    }
}

impl StoredRecord for Conversation {
    type Id = ConversationId;
    const KIND: &'static str = "conversation";
    const TAG: &'static str = "c";
    const DEADLINES: DueQueue = DueQueue("cdue");

    fn id(&self) -> &ConversationId {
        &self.id
    }
    fn rev(&self) -> u64 {
        self.rev
    }
    fn created_at(&self) -> Timestamp {
        self.opened_at
    }
    fn next_deadline(&self) -> Option<Timestamp> {
        Conversation::next_deadline(self)
    }
    fn kept_from(&self) -> Timestamp {
        self.ended
            .map_or(self.expires_at, |(_, at)| at.max(self.expires_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{ConvOp, EndedBy, OpenConversation};
    use crate::pki::CertificateInfo;
    use crate::secret::Secret;
    use crate::session::{
        CancelledBy, ConversationPolicy, DisplayText, Kind, NewSession, NewSessionRequest, Op,
    };

    const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    fn session() -> Session {
        let spec = NewSession::validate(
            NewSessionRequest {
                kind: Some(Kind::Login),
                ttl_s: Some(180),
                display: Some(DisplayText {
                    title: "登录".into(),
                    detail: None,
                }),
                ..Default::default()
            },
            &["platform".to_owned()],
        )
        .unwrap();
        Session::create(SessionId::generate(), "demo", spec, T0).0
    }

    #[test]
    fn a_session_is_due_at_its_expiry_until_it_ends() {
        let mut s = session();
        assert_eq!(StoredRecord::next_deadline(&s), Some(T0.plus_secs(180)));
        assert_eq!(s.kept_from(), T0.plus_secs(180));
        assert_eq!(RecordId::parse(s.id().as_str()), Some(s.id.clone()));
        let rev = s.rev();
        s.apply(
            &Op::Cancel {
                by: CancelledBy::Rp,
            },
            T0.plus_secs(10),
        );
        assert_eq!(s.rev(), rev + 1);
        assert_eq!(StoredRecord::next_deadline(&s), None, "nothing more is due");
        assert_eq!(s.kept_from(), T0.plus_secs(180), "kept from its expiry");
    }

    #[test]
    fn a_conversation_is_due_at_its_next_deadline_and_kept_from_its_end() {
        let mut c = Conversation::open(
            OpenConversation {
                id: ConversationId::generate(),
                app_id: "demo".into(),
                session_id: SessionId::generate(),
                certificate: CertificateInfo {
                    pem: String::new(),
                    serial: "1".into(),
                    subject: "CN=a".into(),
                    issuer: "CN=ca".into(),
                    not_before: T0,
                    not_after: T0.plus_secs(86_400),
                    domain: "platform".into(),
                },
                chain_pem: vec![],
                device_name: "phone".into(),
                requester: None,
                requester_token: Secret::generate().hash(),
                phone_token: Secret::generate().hash(),
                policy: ConversationPolicy {
                    max_requests: 10,
                    idle_s: 600,
                    max_s: 3600,
                },
            },
            T0,
        );
        assert_eq!(StoredRecord::next_deadline(&c), Some(T0.plus_secs(600)));
        assert_eq!(c.created_at(), T0);
        c.apply(&ConvOp::End { by: EndedBy::Phone }, T0.plus_secs(1));
        assert_eq!(StoredRecord::next_deadline(&c), None);
        assert_eq!(
            c.kept_from(),
            T0.plus_secs(3600),
            "kept from its planned end"
        );
    }
}
