//! The wire format of the conntrack sync channel, free of I/O and of cryptography.
//!
//! Each direction of the TCP connection carries:
//!
//! ```text
//! preamble (8 bytes, once):   "VRCT" | version u8 | mode u8 | 0u8 | 0u8
//! then frames:                length u32 BE | seq u64 BE | body (length bytes)
//! ```
//!
//! `mode` is 0 for a plain (unauthenticated) channel and 1 for Noise with a pre-shared key. In
//! Noise mode each side's first frame is a handshake message (seq 0); every later frame is a
//! transport message whose `seq` is its AEAD nonce, counting from 0 in each direction, so that a
//! frame replayed, dropped or reordered inside a connection is caught before decryption. The body
//! of a transport frame is at most 65535 bytes (the Noise message limit); its plaintext holds
//! records:
//!
//! ```text
//! record:  header u16 BE (bit 15: MORE, bits 0-14: length) | length bytes
//! ```
//!
//! A message is one record, or several consecutive records (possibly in consecutive frames) all
//! but the last with MORE set. A frame without records is a heartbeat.
//!
//! No function in this module panics, whatever bytes it is given.

/// The first four bytes each side sends.
pub const MAGIC: [u8; 4] = *b"VRCT";
/// The only version of this format.
pub const VERSION: u8 = 1;
/// Length of the preamble.
pub const PREAMBLE_LEN: usize = 8;
/// Length of a frame header (length u32 + seq u64).
pub const FRAME_HEADER_LEN: usize = 12;
/// The largest frame body (the Noise message limit).
pub const MAX_FRAME_BODY: usize = 65535;
/// The authentication tag an AEAD adds to each Noise transport message.
pub const TAG_LEN: usize = 16;
/// The largest plaintext of one frame, in both modes (a Noise message minus its tag).
pub const MAX_PLAINTEXT: usize = MAX_FRAME_BODY - TAG_LEN;
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 2;
/// The largest message the channel carries; bounds the receiver's reassembly buffer.
pub const MAX_MESSAGE: usize = 16 << 20;

const RECORD_MORE: u16 = 0x8000;
const MAX_RECORD: usize = 0x7fff;

/// How the channel protects its frames, announced in the preamble.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No authentication, no encryption (no key-file configured).
    Plain,
    /// Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s with the key-file as pre-shared key.
    NoisePsk,
}

impl Mode {
    fn code(self) -> u8 {
        match self {
            Mode::Plain => 0,
            Mode::NoisePsk => 1,
        }
    }

    /// The smallest valid body of a transport frame.
    pub fn min_body(self) -> usize {
        match self {
            Mode::Plain => 0,
            Mode::NoisePsk => TAG_LEN,
        }
    }

    /// The largest valid body of a transport frame.
    pub fn max_body(self) -> usize {
        match self {
            Mode::Plain => MAX_PLAINTEXT,
            Mode::NoisePsk => MAX_FRAME_BODY,
        }
    }
}

/// Why bytes from the peer were rejected. [`reason`](WireError::reason) is a stable counter key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("bad preamble: not a vrrpd conntrack-sync peer")]
    BadMagic,
    #[error("peer speaks version {0} of the sync protocol, we speak {VERSION}")]
    Version(u8),
    #[error("unknown channel mode {0}")]
    UnknownMode(u8),
    #[error("frame body of {len} bytes exceeds the limit of {max}")]
    Oversize { len: usize, max: usize },
    #[error("frame body of {len} bytes is shorter than the minimum of {min}")]
    Undersize { len: usize, min: usize },
    #[error("connection ended inside a frame ({buffered} bytes of it received)")]
    Truncated { buffered: usize },
    #[error("frame with sequence number {got} already seen (expected {expected})")]
    Replay { expected: u64, got: u64 },
    #[error("frame with sequence number {got} out of order (expected {expected})")]
    Sequence { expected: u64, got: u64 },
    #[error("record of {len} bytes overruns its frame ({left} bytes left)")]
    BadRecord { len: usize, left: usize },
    #[error("message larger than {MAX_MESSAGE} bytes")]
    MessageTooLarge,
}

impl WireError {
    /// The counter key for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::BadMagic | WireError::UnknownMode(_) => "garbage",
            WireError::Undersize { .. } | WireError::BadRecord { .. } => "garbage",
            WireError::Version(_) => "version",
            WireError::Oversize { .. } | WireError::MessageTooLarge => "oversize",
            WireError::Truncated { .. } => "truncated",
            WireError::Replay { .. } => "replay",
            WireError::Sequence { .. } => "sequence",
        }
    }
}

/// The preamble announcing `mode`.
pub fn encode_preamble(mode: Mode) -> [u8; PREAMBLE_LEN] {
    let mut p = [0u8; PREAMBLE_LEN];
    p[..4].copy_from_slice(&MAGIC);
    p[4] = VERSION;
    p[5] = mode.code();
    p
}

/// The mode the peer announces in its preamble.
pub fn decode_preamble(p: &[u8; PREAMBLE_LEN]) -> Result<Mode, WireError> {
    if p[..4] != MAGIC || p[6] != 0 || p[7] != 0 {
        return Err(WireError::BadMagic);
    }
    if p[4] != VERSION {
        return Err(WireError::Version(p[4]));
    }
    match p[5] {
        0 => Ok(Mode::Plain),
        1 => Ok(Mode::NoisePsk),
        other => Err(WireError::UnknownMode(other)),
    }
}

/// Appends a frame header to `out`.
pub fn encode_frame_header(body_len: usize, seq: u64, out: &mut Vec<u8>) {
    // Callers never build a body beyond MAX_FRAME_BODY, which fits a u32.
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
}

/// Checks a received frame's sequence number against the one expected next.
pub fn check_seq(expected: u64, got: u64) -> Result<(), WireError> {
    match got.cmp(&expected) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(WireError::Replay { expected, got }),
        std::cmp::Ordering::Greater => Err(WireError::Sequence { expected, got }),
    }
}

/// One frame as received: its sequence number and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub seq: u64,
    pub body: &'a [u8],
}

/// Splits a received byte stream into frames, with a fixed buffer: the reader reads into
/// [`space`](FrameDecoder::space), reports the count with [`filled`](FrameDecoder::filled), and
/// takes frames with [`next_frame`](FrameDecoder::next_frame). A bad length is rejected as soon
/// as the header is in, before any body is buffered.
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    min_body: usize,
    max_body: usize,
}

impl FrameDecoder {
    /// Room for two full frames, so that a read is never smaller than half a frame.
    const CAPACITY: usize = 2 * (FRAME_HEADER_LEN + MAX_FRAME_BODY);

    /// A decoder accepting bodies of `min_body..=max_body` bytes.
    pub fn new(min_body: usize, max_body: usize) -> Self {
        FrameDecoder {
            buf: vec![0; Self::CAPACITY],
            start: 0,
            end: 0,
            min_body,
            max_body: max_body.min(MAX_FRAME_BODY),
        }
    }

    /// Changes the accepted body sizes (after the handshake).
    pub fn set_limits(&mut self, min_body: usize, max_body: usize) {
        self.min_body = min_body;
        self.max_body = max_body.min(MAX_FRAME_BODY);
    }

    /// Bytes received and not yet taken as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Where the next read goes; never empty.
    pub fn space(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() || self.start > self.buf.len() / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`space`](FrameDecoder::space).
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Appends bytes (for tests and for callers that do not read in place). Returns how many
    /// were taken: fewer than given when the buffer is full of incomplete frames.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let space = self.space();
        let n = space.len().min(bytes.len());
        space[..n].copy_from_slice(&bytes[..n]);
        self.filled(n);
        n
    }

    /// The next complete frame, `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, WireError> {
        let data = &self.buf[self.start..self.end];
        let Some((len, rest)) = data.split_first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > self.max_body {
            return Err(WireError::Oversize {
                len,
                max: self.max_body,
            });
        }
        if len < self.min_body {
            return Err(WireError::Undersize {
                len,
                min: self.min_body,
            });
        }
        let Some((seq, rest)) = rest.split_first_chunk::<8>() else {
            return Ok(None);
        };
        let Some(body) = rest.get(..len) else {
            return Ok(None);
        };
        self.start += FRAME_HEADER_LEN + len;
        Ok(Some(Frame {
            seq: u64::from_be_bytes(*seq),
            body,
        }))
    }

    /// Called at end of stream: an error when a frame was cut short.
    pub fn finish(&self) -> Result<(), WireError> {
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(WireError::Truncated { buffered }),
        }
    }
}

/// Packs messages into frame plaintexts, splitting a message over several records (and frames)
/// when it does not fit; `seal` receives each full plaintext.
#[derive(Default)]
pub struct Batcher {
    plain: Vec<u8>,
}

impl Batcher {
    pub fn new() -> Self {
        Batcher {
            plain: Vec::with_capacity(MAX_PLAINTEXT),
        }
    }

    /// True when no record is waiting to be sealed.
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty()
    }

    /// Appends `msg` as records, sealing each plaintext that fills up.
    pub fn push<E>(
        &mut self,
        msg: &[u8],
        seal: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut rest = msg;
        loop {
            let room = MAX_PLAINTEXT - self.plain.len();
            // A record needs its header plus one byte, except the empty message.
            let needed = RECORD_HEADER_LEN + usize::from(!rest.is_empty());
            if room < needed {
                self.seal(seal)?;
                continue;
            }
            let take = rest.len().min(room - RECORD_HEADER_LEN).min(MAX_RECORD);
            let more = take < rest.len();
            // take <= MAX_RECORD = 0x7fff fits in 15 bits.
            let header = take as u16 | if more { RECORD_MORE } else { 0 };
            self.plain.extend_from_slice(&header.to_be_bytes());
            self.plain.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if !more {
                return Ok(());
            }
        }
    }

    /// Seals what is buffered, even nothing (a heartbeat).
    pub fn seal<E>(&mut self, seal: &mut impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let result = seal(&self.plain);
        self.plain.clear();
        result
    }
}

/// Splits frame plaintexts into messages, joining messages split over several frames.
#[derive(Default)]
pub struct Reassembler {
    partial: Vec<u8>,
    in_message: bool,
}

impl Reassembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the messages completed by `plain` to `out`. On error nothing is appended and the
    /// reassembler must not be used again (the connection is dropped).
    pub fn feed(&mut self, plain: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), WireError> {
        let first_new = out.len();
        let result = self.feed_inner(plain, out);
        if result.is_err() {
            out.truncate(first_new);
            self.partial = Vec::new();
            self.in_message = false;
        }
        result
    }

    fn feed_inner(&mut self, plain: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), WireError> {
        let mut rest = plain;
        while let Some((header, tail)) = rest.split_first_chunk::<RECORD_HEADER_LEN>() {
            let header = u16::from_be_bytes(*header);
            let more = header & RECORD_MORE != 0;
            let len = usize::from(header & !RECORD_MORE);
            let Some(bytes) = tail.get(..len) else {
                return Err(WireError::BadRecord {
                    len,
                    left: tail.len(),
                });
            };
            rest = &tail[len..];
            if !self.in_message && !more {
                out.push(bytes.to_vec());
                continue;
            }
            if self.partial.len() + len > MAX_MESSAGE {
                return Err(WireError::MessageTooLarge);
            }
            self.partial.extend_from_slice(bytes);
            self.in_message = more;
            if !more {
                out.push(std::mem::take(&mut self.partial));
            }
        }
        if !rest.is_empty() {
            return Err(WireError::BadRecord {
                len: RECORD_HEADER_LEN,
                left: rest.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(msgs: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut seal = |p: &[u8]| -> Result<(), ()> {
            frames.push(p.to_vec());
            Ok(())
        };
        let mut b = Batcher::new();
        for m in msgs {
            b.push(m, &mut seal).unwrap();
        }
        if !b.is_empty() {
            b.seal(&mut seal).unwrap();
        }
        frames
    }

    fn unbatch(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut r = Reassembler::new();
        let mut out = Vec::new();
        for f in frames {
            assert!(f.len() <= MAX_PLAINTEXT);
            r.feed(f, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn small_messages_share_a_frame() {
        let msgs: Vec<Vec<u8>> = (0..300u32).map(|i| vec![i as u8; 150]).collect();
        let frames = batch(&msgs);
        // 300 * 152 bytes = 45,600 bytes: one frame.
        assert_eq!(frames.len(), 1);
        assert_eq!(unbatch(&frames), msgs);
    }

    #[test]
    fn large_and_empty_messages_round_trip() {
        let msgs = vec![
            vec![],
            vec![7; 200_000],
            vec![1],
            vec![],
            vec![9; MAX_PLAINTEXT],
        ];
        let frames = batch(&msgs);
        assert!(frames.len() >= 4);
        assert_eq!(unbatch(&frames), msgs);
    }

    #[test]
    fn preamble_round_trip_and_rejects() {
        for mode in [Mode::Plain, Mode::NoisePsk] {
            assert_eq!(decode_preamble(&encode_preamble(mode)), Ok(mode));
        }
        let mut p = encode_preamble(Mode::Plain);
        p[0] = b'X';
        assert_eq!(decode_preamble(&p).unwrap_err().reason(), "garbage");
        let mut p = encode_preamble(Mode::Plain);
        p[4] = 2;
        assert_eq!(decode_preamble(&p).unwrap_err().reason(), "version");
        let mut p = encode_preamble(Mode::Plain);
        p[5] = 9;
        assert_eq!(decode_preamble(&p).unwrap_err().reason(), "garbage");
    }

    #[test]
    fn decoder_splits_frames_fed_byte_by_byte() {
        let mut stream = Vec::new();
        for (seq, body) in [
            (0u64, vec![1u8; 20]),
            (1, vec![2u8; 16]),
            (2, vec![3u8; 70]),
        ] {
            encode_frame_header(body.len(), seq, &mut stream);
            stream.extend_from_slice(&body);
        }
        let mut d = FrameDecoder::new(TAG_LEN, MAX_FRAME_BODY);
        let mut got = Vec::new();
        for b in &stream {
            assert_eq!(d.push(&[*b]), 1);
            while let Some(f) = d.next_frame().unwrap() {
                got.push((f.seq, f.body.to_vec()));
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], (2, vec![3u8; 70]));
        assert!(d.finish().is_ok());
    }

    #[test]
    fn decoder_rejects_bad_lengths_before_the_body() {
        let mut d = FrameDecoder::new(TAG_LEN, MAX_FRAME_BODY);
        d.push(&[0, 1, 0, 0]);
        assert_eq!(d.next_frame().unwrap_err().reason(), "oversize");
        let mut d = FrameDecoder::new(TAG_LEN, MAX_FRAME_BODY);
        d.push(&[0, 0, 0, 15]);
        assert_eq!(d.next_frame().unwrap_err().reason(), "garbage");
        let mut d = FrameDecoder::new(TAG_LEN, MAX_FRAME_BODY);
        d.push(&[0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish().unwrap_err().reason(), "truncated");
    }

    #[test]
    fn sequence_check_tells_replay_from_gap() {
        assert!(check_seq(5, 5).is_ok());
        assert_eq!(check_seq(5, 4).unwrap_err().reason(), "replay");
        assert_eq!(check_seq(5, 6).unwrap_err().reason(), "sequence");
    }

    #[test]
    fn reassembler_rejects_overrunning_record_and_appends_nothing() {
        let mut frame = Vec::new();
        frame.extend_from_slice(&3u16.to_be_bytes());
        frame.extend_from_slice(b"abc");
        frame.extend_from_slice(&10u16.to_be_bytes());
        frame.extend_from_slice(b"short");
        let mut out = Vec::new();
        let err = Reassembler::new().feed(&frame, &mut out).unwrap_err();
        assert_eq!(err.reason(), "garbage");
        assert!(out.is_empty());
        // A lone trailing byte is no record either.
        let err = Reassembler::new().feed(&[0, 0, 7], &mut out).unwrap_err();
        assert_eq!(err.reason(), "garbage");
    }

    #[test]
    fn reassembler_bounds_a_message() {
        let mut frame = Vec::new();
        let chunk = vec![0u8; MAX_RECORD];
        let mut r = Reassembler::new();
        let mut out = Vec::new();
        let mut result = Ok(());
        // Endless MORE records: rejected once the message would exceed MAX_MESSAGE.
        for _ in 0..(MAX_MESSAGE / MAX_RECORD + 2) {
            frame.clear();
            frame.extend_from_slice(&(MAX_RECORD as u16 | RECORD_MORE).to_be_bytes());
            frame.extend_from_slice(&chunk);
            result = r.feed(&frame, &mut out);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result.unwrap_err().reason(), "oversize");
        assert!(out.is_empty());
    }

    proptest! {
        #[test]
        fn decoder_and_reassembler_never_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 0..20),
            min_body in 0usize..40,
        ) {
            let mut d = FrameDecoder::new(min_body, MAX_FRAME_BODY);
            let mut r = Reassembler::new();
            let mut out = Vec::new();
            'outer: for c in &chunks {
                let mut rest = &c[..];
                while !rest.is_empty() {
                    let n = d.push(rest);
                    rest = &rest[n..];
                    loop {
                        match d.next_frame() {
                            Ok(Some(f)) => {
                                if r.feed(f.body, &mut out).is_err() { break 'outer; }
                            }
                            Ok(None) => break,
                            Err(_) => break 'outer,
                        }
                    }
                    if n == 0 { break 'outer; }
                }
            }
            let _ = d.finish();
            let mut p = [0u8; PREAMBLE_LEN];
            for (i, b) in chunks.iter().flatten().take(PREAMBLE_LEN).enumerate() { p[i] = *b; }
            let _ = decode_preamble(&p);
        }

        #[test]
        fn batch_round_trip(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..70_000), 0..12)) {
            let frames = batch(&msgs);
            prop_assert_eq!(unbatch(&frames), msgs);
        }
    }
}
