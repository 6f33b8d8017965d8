//! The channel's cryptography: the key-file, the Noise handshake and frame sealing, all from
//! the `snow` crate (Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s) — nothing home-made.
//!
//! Why NNpsk0: both sides contribute a fresh ephemeral key to every connection, so each
//! connection has its own transport keys, and a recorded connection replayed later cannot be
//! decrypted past the handshake; the pre-shared key (derived from the key-file) is mixed in
//! before the first message, so a peer without it is rejected at its first message. Transport
//! frames carry their nonce explicitly (the frame's seq), which lets the receiver name a replayed
//! frame before decrypting it; the AEAD rejects a frame whose seq or bytes were changed.

use std::collections::{HashSet, VecDeque};
use std::path::Path;

use blake2::{Blake2s256, Digest};
use snow::{HandshakeState, StatelessTransportState};

use super::wire::{self, MAX_FRAME_BODY, TAG_LEN};

/// The Noise protocol the channel speaks.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// The least number of secret bytes a key-file must hold.
pub const MIN_KEY_LEN: usize = 32;
/// Bound on the handshakes remembered for replay detection.
const REPLAY_MEMORY: usize = 4096;

/// Binds the handshake to this protocol and version.
const PROLOGUE: &[u8] = b"vrrpd conntrack-sync v1";
/// Separates the pre-shared key from any other use of the key-file.
const PSK_CONTEXT: &[u8] = b"vrrpd conntrack-sync v1 psk";

/// A problem with the key-file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key-file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("key-file {path}: {len} bytes of secret, at least {MIN_KEY_LEN} are required")]
    TooShort { path: String, len: usize },
}

/// Reads a key-file: its bytes, without a trailing line break (so that `echo`/editors do not
/// matter), at least [`MIN_KEY_LEN`] of them. Warns when others may read it.
pub fn load_key(path: &Path) -> Result<Vec<u8>, KeyError> {
    let shown = path.display().to_string();
    let mut key = std::fs::read(path).map_err(|source| KeyError::Read {
        path: shown.clone(),
        source,
    })?;
    while matches!(key.last(), Some(b'\n' | b'\r')) {
        key.pop();
    }
    if key.len() < MIN_KEY_LEN {
        return Err(KeyError::TooShort {
            path: shown,
            len: key.len(),
        });
    }
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %shown, "key-file is readable by group or others; chmod 600 it");
        }
    }
    Ok(key)
}

/// The Noise pre-shared key for a key-file's contents.
pub fn derive_psk(key: &[u8]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    h.update(PSK_CONTEXT);
    h.update(key);
    h.finalize().into()
}

/// Why a handshake message was refused.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("authentication failed: the peer does not hold our key ({0})")]
    Auth(snow::Error),
    #[error("replayed handshake: this connection opening was seen before")]
    Replay,
    #[error("handshake failed: {0}")]
    Internal(snow::Error),
}

impl HandshakeError {
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::Auth(_) => "auth",
            HandshakeError::Replay => "replay",
            HandshakeError::Internal(_) => "handshake",
        }
    }
}

fn builder(psk: &[u8; 32]) -> Result<snow::Builder<'_>, snow::Error> {
    let params = NOISE_PARAMS.parse()?;
    snow::Builder::new(params).prologue(PROLOGUE)?.psk(0, psk)
}

/// The dialling side's handshake: [`first_message`](Initiator::first_message), then
/// [`finish`](Initiator::finish) with the responder's reply.
pub struct Initiator(HandshakeState);

impl Initiator {
    pub fn new(psk: &[u8; 32]) -> Result<Self, HandshakeError> {
        let hs = builder(psk).and_then(|b| b.build_initiator());
        hs.map(Initiator).map_err(HandshakeError::Internal)
    }

    /// `-> psk, e`
    pub fn first_message(&mut self) -> Result<Vec<u8>, HandshakeError> {
        let mut buf = vec![0u8; 128];
        let n = self
            .0
            .write_message(&[], &mut buf)
            .map_err(HandshakeError::Internal)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// `<- e, ee`: authenticates the responder (only a holder of the key can answer our fresh
    /// ephemeral key).
    pub fn finish(mut self, reply: &[u8]) -> Result<Sealer, HandshakeError> {
        let mut payload = vec![0u8; MAX_FRAME_BODY];
        self.0
            .read_message(reply, &mut payload)
            .map_err(HandshakeError::Auth)?;
        let ts = self
            .0
            .into_stateless_transport_mode()
            .map_err(HandshakeError::Internal)?;
        Ok(Sealer::Noise(ts))
    }
}

/// The accepting side's handshake. The initiator's first message proves it knows the key but
/// not that it is live (it may be a recording): the responder treats the connection as
/// authenticated only once the first transport frame decrypts, and refuses first messages it
/// has seen before.
pub struct Responder;

impl Responder {
    /// Reads `-> psk, e` and returns `<- e, ee` and the transport sealer.
    pub fn respond(
        psk: &[u8; 32],
        first: &[u8],
        seen: &ReplayMemory,
    ) -> Result<(Vec<u8>, Sealer), HandshakeError> {
        let mut hs = builder(psk)
            .and_then(|b| b.build_responder())
            .map_err(HandshakeError::Internal)?;
        let mut payload = vec![0u8; MAX_FRAME_BODY];
        hs.read_message(first, &mut payload)
            .map_err(HandshakeError::Auth)?;
        // The handshake hash now covers the initiator's ephemeral key: equal for a replay.
        if !seen.insert(hs.get_handshake_hash()) {
            return Err(HandshakeError::Replay);
        }
        let mut reply = vec![0u8; 128];
        let n = hs
            .write_message(&[], &mut reply)
            .map_err(HandshakeError::Internal)?;
        reply.truncate(n);
        let ts = hs
            .into_stateless_transport_mode()
            .map_err(HandshakeError::Internal)?;
        Ok((reply, Sealer::Noise(ts)))
    }
}

/// The handshakes already answered, bounded (oldest forgotten first). Only handshakes made with
/// our key enter it, so an attacker cannot flush it.
#[derive(Default)]
pub struct ReplayMemory {
    inner: std::sync::Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    set: HashSet<Vec<u8>>,
    order: VecDeque<Vec<u8>>,
}

impl ReplayMemory {
    /// False when `id` was seen before.
    pub fn insert(&self, id: &[u8]) -> bool {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Seen { set, order } = &mut *guard;
        if !set.insert(id.to_vec()) {
            return false;
        }
        order.push_back(id.to_vec());
        if order.len() > REPLAY_MEMORY
            && let Some(old) = order.pop_front()
        {
            set.remove(&old);
        }
        true
    }
}

/// The frame was forged, altered, or sealed with other keys.
#[derive(Debug, thiserror::Error)]
#[error("frame failed authentication")]
pub struct OpenError;

/// Seals and opens transport frames, for one connection.
pub enum Sealer {
    Plain,
    Noise(StatelessTransportState),
}

impl Sealer {
    /// Appends the frame (header and body) carrying `plain` with sequence number `seq` to `out`.
    pub fn seal(&self, seq: u64, plain: &[u8], out: &mut Vec<u8>) -> Result<(), snow::Error> {
        match self {
            Sealer::Plain => {
                wire::encode_frame_header(plain.len(), seq, out);
                out.extend_from_slice(plain);
            }
            Sealer::Noise(ts) => {
                let body_len = plain.len() + TAG_LEN;
                wire::encode_frame_header(body_len, seq, out);
                let start = out.len();
                out.resize(start + body_len, 0);
                let n = ts.write_message(seq, plain, &mut out[start..])?;
                out.truncate(start + n);
            }
        }
        Ok(())
    }

    /// The plaintext of a received frame body; `scratch` holds it in Noise mode.
    pub fn open<'a>(
        &self,
        seq: u64,
        body: &'a [u8],
        scratch: &'a mut [u8],
    ) -> Result<&'a [u8], OpenError> {
        match self {
            Sealer::Plain => Ok(body),
            Sealer::Noise(ts) => {
                let n = ts.read_message(seq, body, scratch).map_err(|_| OpenError)?;
                scratch.get(..n).ok_or(OpenError)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(psk_i: &[u8; 32], psk_r: &[u8; 32]) -> Result<(Sealer, Sealer), HandshakeError> {
        let mut i = Initiator::new(psk_i)?;
        let first = i.first_message()?;
        let (reply, r) = Responder::respond(psk_r, &first, &ReplayMemory::default())?;
        Ok((i.finish(&reply)?, r))
    }

    #[test]
    fn sealed_frames_open_only_with_the_right_seq_and_bytes() {
        let psk = derive_psk(&[7u8; 40]);
        let (i, r) = pair(&psk, &psk).unwrap();
        let mut out = Vec::new();
        i.seal(3, b"hello", &mut out).unwrap();
        let body = &out[wire::FRAME_HEADER_LEN..];
        let mut scratch = vec![0u8; MAX_FRAME_BODY];
        assert_eq!(r.open(3, body, &mut scratch).unwrap(), b"hello");
        assert!(
            r.open(4, body, &mut scratch).is_err(),
            "wrong nonce must fail"
        );
        let mut flipped = body.to_vec();
        flipped[2] ^= 0x10;
        assert!(
            r.open(3, &flipped, &mut scratch).is_err(),
            "bit flip must fail"
        );
        // A frame reflected back to its sender uses the other direction's key.
        assert!(
            i.open(3, body, &mut scratch).is_err(),
            "reflection must fail"
        );
    }

    #[test]
    fn wrong_key_fails_at_the_first_message() {
        let err = pair(&derive_psk(&[1u8; 32]), &derive_psk(&[2u8; 32]))
            .err()
            .unwrap();
        assert_eq!(err.reason(), "auth");
    }

    #[test]
    fn replayed_first_message_is_refused() {
        let psk = derive_psk(&[9u8; 32]);
        let seen = ReplayMemory::default();
        let first = Initiator::new(&psk).unwrap().first_message().unwrap();
        assert!(Responder::respond(&psk, &first, &seen).is_ok());
        let err = Responder::respond(&psk, &first, &seen).err().unwrap();
        assert_eq!(err.reason(), "replay");
    }

    proptest::proptest! {
        #[test]
        fn opening_arbitrary_bodies_never_panics(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
            seq in proptest::prelude::any::<u64>(),
        ) {
            let psk = derive_psk(&[3u8; 32]);
            let (_, r) = pair(&psk, &psk).unwrap();
            let mut scratch = vec![0u8; MAX_FRAME_BODY];
            proptest::prop_assert!(r.open(seq, &body, &mut scratch).is_err());
            let mut first = vec![0u8; 0];
            first.extend_from_slice(&body);
            proptest::prop_assert!(Responder::respond(&psk, &first, &ReplayMemory::default()).is_err());
        }
    }

    #[test]
    fn load_key_trims_line_break_and_requires_32_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, format!("{}\n", "a".repeat(31))).unwrap();
        let err = load_key(&short).unwrap_err().to_string();
        assert!(err.contains("31 bytes") && err.contains("short"), "{err}");
        let good = dir.path().join("good");
        std::fs::write(&good, format!("{}\r\n", "b".repeat(32))).unwrap();
        assert_eq!(load_key(&good).unwrap(), vec![b'b'; 32]);
        let missing = dir.path().join("missing");
        assert!(
            load_key(&missing)
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }
}
