//! The replication records carried inside channel messages, one record per message.
//!
//! ```text
//!  0        1        2
//! +--------+--------+---------------------------------------------+
//! | version|  kind  | body                                        |
//! +--------+--------+---------------------------------------------+
//! kind 1 Upsert       body = the entry's own encoding (Entry::encode)
//! kind 2 Delete       body = the entry's own encoding (the master's last view of the flow)
//! kind 3 ResyncBegin  body = epoch (u64 BE)
//! kind 4 ResyncEnd    body = epoch (u64 BE), count of Upserts since ResyncBegin (u64 BE)
//! kind 5 ResyncRequest body empty: a backup asks the master for its whole table
//! kind 6 MergeRequest  body empty: a master that finds its peer acting as master too asks for
//!                      the peer's table, to merge it per flow (a split brain, channel up)
//! ```
//! The channel authenticates and orders messages; this layer only has to reject what a peer of
//! another version (or a bug) could send, with a reason for the `show sync` error counters.

use super::sync::SyncEntry;

/// The record format version this daemon speaks.
pub const VERSION: u8 = 1;

const KIND_UPSERT: u8 = 1;
const KIND_DELETE: u8 = 2;
const KIND_RESYNC_BEGIN: u8 = 3;
const KIND_RESYNC_END: u8 = 4;
const KIND_RESYNC_REQUEST: u8 = 5;
const KIND_MERGE_REQUEST: u8 = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<E> {
    /// Create the flow, or bring it up to date.
    Upsert(E),
    /// The flow ended on the master.
    Delete(E),
    /// A full table transfer follows.
    ResyncBegin { epoch: u64 },
    /// The transfer is complete: `count` Upserts were sent since the matching ResyncBegin.
    ResyncEnd { epoch: u64, count: u64 },
    /// Sent by a backup that may have missed records (it just left MASTER, or a resync was
    /// incomplete): the master answers with a resync.
    ResyncRequest,
    /// Sent by a master that received records from its peer acting as master too: the peer
    /// answers with its whole table, which the master merges per flow.
    MergeRequest,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("empty record")]
    Empty,
    #[error("record version {0}, this daemon speaks {VERSION}")]
    Version(u8),
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("truncated record")]
    Truncated,
    #[error("trailing bytes after the record")]
    Trailing,
    #[error("bad entry: {0}")]
    Entry(&'static str),
}

impl RecordError {
    /// A short stable name for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::Empty | RecordError::Truncated => "record-truncated",
            RecordError::Version(_) => "record-version",
            RecordError::Kind(_) => "record-kind",
            RecordError::Trailing => "record-trailing",
            RecordError::Entry(_) => "record-entry",
        }
    }
}

impl<E: SyncEntry> Record<E> {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.push(VERSION);
        match self {
            Record::Upsert(e) => {
                out.push(KIND_UPSERT);
                e.encode(&mut out);
            }
            Record::Delete(e) => {
                out.push(KIND_DELETE);
                e.encode(&mut out);
            }
            Record::ResyncBegin { epoch } => {
                out.push(KIND_RESYNC_BEGIN);
                out.extend_from_slice(&epoch.to_be_bytes());
            }
            Record::ResyncEnd { epoch, count } => {
                out.push(KIND_RESYNC_END);
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&count.to_be_bytes());
            }
            Record::ResyncRequest => out.push(KIND_RESYNC_REQUEST),
            Record::MergeRequest => out.push(KIND_MERGE_REQUEST),
        }
        out
    }

    /// Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let (&version, rest) = bytes.split_first().ok_or(RecordError::Empty)?;
        if version != VERSION {
            return Err(RecordError::Version(version));
        }
        let (&kind, body) = rest.split_first().ok_or(RecordError::Truncated)?;
        let u64_at = |at: usize| -> Result<u64, RecordError> {
            body.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or(RecordError::Truncated)
        };
        let exact = |len: usize| {
            if body.len() > len {
                Err(RecordError::Trailing)
            } else {
                Ok(())
            }
        };
        match kind {
            KIND_UPSERT => E::decode(body)
                .map(Record::Upsert)
                .map_err(RecordError::Entry),
            KIND_DELETE => E::decode(body)
                .map(Record::Delete)
                .map_err(RecordError::Entry),
            KIND_RESYNC_BEGIN => {
                let epoch = u64_at(0)?;
                exact(8)?;
                Ok(Record::ResyncBegin { epoch })
            }
            KIND_RESYNC_END => {
                let epoch = u64_at(0)?;
                let count = u64_at(8)?;
                exact(16)?;
                Ok(Record::ResyncEnd { epoch, count })
            }
            KIND_RESYNC_REQUEST => {
                exact(0)?;
                Ok(Record::ResyncRequest)
            }
            KIND_MERGE_REQUEST => {
                exact(0)?;
                Ok(Record::MergeRequest)
            }
            other => Err(RecordError::Kind(other)),
        }
    }
}
