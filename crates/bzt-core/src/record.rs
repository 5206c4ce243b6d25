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
