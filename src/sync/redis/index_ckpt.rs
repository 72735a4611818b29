//! The index checkpoint: what a replica needs to answer checks, and nothing more, in a
//! binary form it reads without parsing text. The leader writes it beside the full
//! checkpoint, of the same generation and stream position; a starting replica loads it,
//! answers SERVING, and decodes the full records (for `GetConsent` and the latest-event rule)
//! afterwards.
//!
//! A chunk is a version byte, then entries, one per channel record, little-endian:
//! `brand: u32`, `kind: u8` (bit 0 e-mail, bit 1 TACIR, bit 2 MESAJ), `state: u32` (the
//! index's packed channel state), then the address (a phone's E.164 digits as `u64`; an
//! e-mail's normalised address as `len: u16` and its bytes: the index key is a hash under each
//! process's own secret, so the address is carried, not the key), then the retailer codes
//! (`n: u16`, `n × u32`). A phone entry is 19 bytes against ≈ 250 for the JSON record.

use crate::check::index::{ChannelState, IndexAddress};
use crate::check::store::{Consents, IndexRows, channel_state};
use crate::domain::{Channel, ConsentEvent, ConsentKey, Recipient, RecipientType};

use super::SharedError;

const VERSION: u8 = 1;
const EMAIL: u8 = 1;
const TACIR: u8 = 2;
const MESAJ: u8 = 4;

/// Channel records per chunk (≈ 5 MB of phones).
pub(super) const CHUNK: usize = 250_000;

/// Encodes records as index checkpoint chunks of up to [`CHUNK`] entries.
#[derive(Default)]
pub(super) struct Writer {
    chunks: Vec<Vec<u8>>,
    in_last: usize,
}

impl Writer {
    pub(super) fn push(&mut self, key: &ConsentKey, event: &ConsentEvent) {
        if self.chunks.is_empty() || self.in_last == CHUNK {
            let mut chunk = Vec::with_capacity(CHUNK * 19 + 1);
            chunk.push(VERSION);
            self.chunks.push(chunk);
            self.in_last = 0;
        }
        let out = self.chunks.last_mut().expect("pushed above");
        self.in_last += 1;
        let mut kind = 0;
        if key.recipient_type == RecipientType::Tacir {
            kind |= TACIR;
        }
        if key.channel == Channel::Mesaj {
            kind |= MESAJ;
        }
        if matches!(key.recipient, Recipient::Email(_)) {
            kind |= EMAIL;
        }
        out.extend_from_slice(&key.brand.to_le_bytes());
        out.push(kind);
        out.extend_from_slice(&channel_state(event).raw().to_le_bytes());
        match &key.recipient {
            Recipient::Phone(p) => out.extend_from_slice(&p.digits().to_le_bytes()),
            Recipient::Email(e) => {
                // At most 265 bytes, İYS's limit, checked when the address was accepted.
                let bytes = e.as_str().as_bytes();
                let len = u16::try_from(bytes.len()).expect("an address is under 64 KiB");
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(bytes);
            }
        }
        // More than 65 535 retailers would be cut to that many: fewer retailers allowed
        // until the full records are in and the index is rebuilt from them, never more.
        let codes = &event.retailer_access;
        let n = u16::try_from(codes.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        for code in &codes[..usize::from(n)] {
            out.extend_from_slice(&code.to_le_bytes());
        }
    }

    pub(super) fn into_chunks(self) -> Vec<Vec<u8>> {
        self.chunks
    }
}

/// Reads a chunk front to back.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SharedError> {
        if self.0.len() < n {
            return Err(bad("truncated entry"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, SharedError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

fn bad(what: &str) -> SharedError {
    SharedError::Decode(format!("index checkpoint: {what}"))
}

/// Decodes one chunk into index rows (e-mail addresses keyed by `consents`' key).
pub(super) fn decode(chunk: &[u8], consents: &Consents) -> Result<IndexRows, SharedError> {
    let mut rows = IndexRows::default();
    let Some((&version, rest)) = chunk.split_first() else {
        return Err(bad("empty chunk"));
    };
    if version != VERSION {
        return Err(bad(&format!("unknown version {version}")));
    }
    let mut at = Cursor(rest);
    while !at.0.is_empty() {
        let brand = at.u32()?;
        let kind = at.take(1)?[0];
        let state = ChannelState::from_raw(at.u32()?);
        let rtype = if kind & TACIR == 0 {
            RecipientType::Bireysel
        } else {
            RecipientType::Tacir
        };
        let (address, channel) = if kind & EMAIL == 0 {
            let digits = u64::from_le_bytes(at.take(8)?.try_into().expect("8 bytes"));
            let channel = if kind & MESAJ == 0 {
                Channel::Arama
            } else {
                Channel::Mesaj
            };
            (IndexAddress::Phone(digits), channel)
        } else {
            let len = usize::from(u16::from_le_bytes(at.take(2)?.try_into().expect("2 bytes")));
            let text = std::str::from_utf8(at.take(len)?).map_err(|_| bad("address not UTF-8"))?;
            (consents.email_address(rtype, text), Channel::Eposta)
        };
        let n = usize::from(u16::from_le_bytes(at.take(2)?.try_into().expect("2 bytes")));
        let mut codes = Vec::with_capacity(n);
        for _ in 0..n {
            codes.push(at.u32()?);
        }
        rows.push(brand, rtype, address, channel, state, &codes);
    }
    Ok(rows)
}
