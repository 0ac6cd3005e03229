//! Record framing: `[len: u32 LE][crc32: u32 LE][seq: u64 LE][payload: len bytes]`, the CRC covering seq and payload.
//! A torn write (crash mid-record) or flipped bits fail the length or checksum test and end the readable log there.

/// Bytes before the payload.
pub const HEADER: usize = 16;
/// Largest payload accepted (beacons are at most 64 KiB; this leaves room and bounds a corrupt length).
pub const MAX_PAYLOAD: usize = 1 << 20;

fn crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends `payload` to `out` with a header whose sequence number and checksum are left for [`seal_all`].
pub fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; HEADER - 4]);
    out.extend_from_slice(payload);
}

/// Numbers the records [`frame`]d in `buf` from `first_seq` on and fills in their checksums, after which `buf`
/// holds whole records in the format above.
pub fn seal_all(buf: &mut [u8], first_seq: u64) {
    let mut at = 0;
    let mut seq = first_seq;
    while at < buf.len() {
        let len = u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
        let checksum = crc(seq, &buf[at + HEADER..at + HEADER + len]);
        buf[at + 4..at + 8].copy_from_slice(&checksum.to_le_bytes());
        buf[at + 8..at + HEADER].copy_from_slice(&seq.to_le_bytes());
        at += HEADER + len;
        seq += 1;
    }
}

/// What the bytes at the start of a buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, valid record and its framed length.
    Record {
        /// Sequence number.
        seq: u64,
        /// Payload.
        payload: &'a [u8],
        /// Bytes consumed.
        len: usize,
    },
    /// Not enough bytes for a whole record (a torn tail, or simply the end).
    Incomplete,
    /// A length beyond the limit or a checksum mismatch.
    Corrupt,
}

/// Reads the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < HEADER {
        return Decoded::Incomplete;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Decoded::Corrupt;
    }
    if buf.len() < HEADER + len {
        return Decoded::Incomplete;
    }
    let want = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
    let payload = &buf[HEADER..HEADER + len];
    if crc(seq, payload) != want {
        return Decoded::Corrupt;
    }
    Decoded::Record {
        seq,
        payload,
        len: HEADER + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The format written field by field: the reference the batch writer is checked against.
    fn encode(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc(seq, payload).to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(payload);
    }

    proptest! {
        /// Framing a batch and sealing it writes exactly the records `encode` writes one by one.
        #[test]
        fn sealed_batches_are_encoded_records(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8),
            first in 1u64..u64::MAX / 2,
        ) {
            let (mut framed, mut encoded) = (Vec::new(), Vec::new());
            for (i, p) in payloads.iter().enumerate() {
                frame(&mut framed, p);
                encode(&mut encoded, first + i as u64, p);
            }
            seal_all(&mut framed, first);
            prop_assert_eq!(framed, encoded);
        }

        #[test]
        fn round_trips_and_detects_any_truncation_or_flip(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
        ) {
            // Written as the spool writes a batch.
            let mut buf = Vec::new();
            for p in &payloads {
                frame(&mut buf, p);
            }
            seal_all(&mut buf, 100);
            // Whole: every record back, in order.
            let mut at = 0;
            for (i, p) in payloads.iter().enumerate() {
                match decode(&buf[at..]) {
                    Decoded::Record { seq, payload, len } => {
                        prop_assert_eq!(seq, 100 + i as u64);
                        prop_assert_eq!(payload, &p[..]);
                        at += len;
                    }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
            prop_assert_eq!(decode(&buf[at..]), Decoded::Incomplete);
            // Truncated anywhere: a prefix of whole records, then Incomplete — never a wrong record.
            let cut = cut.index(buf.len());
            let t = &buf[..cut];
            let mut at = 0;
            while let Decoded::Record { len, .. } = decode(&t[at..]) { at += len; }
            prop_assert_eq!(decode(&t[at..]), Decoded::Incomplete);
            // One flipped bit: never decodes as the original sequence of records.
            let mut f = buf.clone();
            let i = flip.index(f.len());
            f[i] ^= 0x10;
            let mut at = 0;
            let mut good = 0;
            while let Decoded::Record { len, .. } = decode(&f[at..]) { at += len; good += 1; }
            prop_assert!(good < payloads.len() || at < f.len(), "a flip must be noticed");
        }
    }
}
