//! Small helpers the mock needs without extra crates: random ids, hex, base64, a form
//! decoder, a seeded PRNG and a minimal HTTP/1.1 POST client for push delivery.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `n` random bytes from the OS; falls back to a time-seeded PRNG if the OS source fails.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    if getrandom::fill(&mut out).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut rng = SplitMix::new(nanos);
        for byte in &mut out {
            *byte = rng.next_u64() as u8;
        }
    }
    out
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Parses 64 lower- or upper-case hex digits.
pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// A random (version 4) UUID with hyphens, as İYS uses for requestId and subRequestId.
pub fn uuid_v4() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64(input: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding (HTTP Basic auth).
pub fn base64(input: &[u8]) -> String {
    b64(input, STD, true)
}

/// URL-safe base64 without padding (JWT segments).
pub fn base64url(input: &[u8]) -> String {
    b64(input, URL, false)
}

/// Decodes standard base64 (padding optional).
#[cfg(test)]
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = STD.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Decodes an `application/x-www-form-urlencoded` body into pairs.
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    fn decode(part: &[u8]) -> String {
        let mut out = Vec::with_capacity(part.len());
        let mut i = 0;
        while i < part.len() {
            match part[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < part.len() => {
                    let hex = std::str::from_utf8(&part[i + 1..i + 3]).ok();
                    if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        out.push(v);
                        i += 2;
                    } else {
                        out.push(b'%');
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |&b| b == b'=');
            let key = decode(it.next().unwrap_or_default());
            let value = decode(it.next().unwrap_or_default());
            (key, value)
        })
        .collect()
}

pub use crate::rng::SplitMix64 as SplitMix;

/// Why a push POST failed.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("unsupported url (only http:// is supported by the mock)")]
    Url,
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("bad response")]
    BadResponse,
}

/// Where an `http://host[:port]/path` URL points.
struct Target {
    host_port: String,
    host_header: String,
    path: String,
}

fn parse_http_url(url: &str) -> Option<Target> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let host_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Some(Target {
        host_port,
        host_header: authority.to_owned(),
        path: path.to_owned(),
    })
}

/// POSTs `body` as JSON with HTTP Basic auth; returns the response status code.
/// HTTP/1.1 with `Connection: close`; https is not supported (the mock runs on loopback).
pub async fn post_json_basic(
    url: &str,
    username: &str,
    password: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<u16, PostError> {
    let target = parse_http_url(url).ok_or(PostError::Url)?;
    let auth = base64(format!("{username}:{password}").as_bytes());
    let exchange = async {
        let mut stream = TcpStream::connect(&target.host_port).await?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {auth}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            target.path,
            target.host_header,
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.flush().await?;
        let mut response = Vec::new();
        let mut buf = [0u8; 1024];
        // The status line is enough; stop at the end of the headers or at EOF.
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if response.windows(4).any(|w| w == b"\r\n\r\n") || response.len() > 64 * 1024 {
                break;
            }
        }
        Ok::<_, PostError>(response)
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| PostError::Timeout)??;
    let line = response.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| PostError::BadResponse)?;
    let mut parts = line.split_whitespace();
    match (
        parts.next(),
        parts.next().and_then(|s| s.parse::<u16>().ok()),
    ) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => Ok(code),
        _ => Err(PostError::BadResponse),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn uuid_and_hex_shapes() {
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        let bytes = random_bytes::<32>();
        assert_eq!(parse_hex32(&hex(&bytes)), Some(bytes));
    }

    #[test]
    fn form_decoding() {
        let pairs = form_pairs(b"grant_type=password&username=a%40b.cc&password=p+w%2B");
        assert_eq!(pairs[1], ("username".into(), "a@b.cc".into()));
        assert_eq!(pairs[2], ("password".into(), "p w+".into()));
    }

    #[test]
    fn http_url_parsing() {
        let t = parse_http_url("http://127.0.0.1:8080/push/in").unwrap();
        assert_eq!(
            (t.host_port.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "/push/in")
        );
        let t = parse_http_url("http://example.test").unwrap();
        assert_eq!(
            (t.host_port.as_str(), t.path.as_str()),
            ("example.test:80", "/")
        );
        assert!(parse_http_url("https://x/").is_none());
    }
}
