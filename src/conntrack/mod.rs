//! Conntrack replication between the two routers.
//!
//! - [`channel`]: the replication channel to the peer (TCP on the sync link; authenticated,
//!   encrypted, ordered, with back-pressure), built on [`wire`] (framing and batching) and
//!   [`noise`] (key-file, Noise handshake, frame sealing).

pub mod channel;
pub mod noise;
pub mod wire;
