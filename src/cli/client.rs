//! The command-line client: one-off checks and filtering a file of recipients through a
//! running server. Output goes to stdout for the user's own pipeline; nothing is logged.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write as _;

use tokio::io::AsyncBufReadExt;
use tokio_stream::StreamExt;
use tonic::Request;
use tonic::metadata::MetadataValue;

use crate::api::API_KEY_HEADER;
use crate::app::config::{CheckArgs, ClientArgs, FilterArgs};
use crate::pb;
use crate::pb::convert::{pb_channel, pb_purpose};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("the API key is not valid metadata text")]
    BadKey,
    #[error("reading recipients: {0}")]
    Io(#[from] std::io::Error),
}

pub type Client = pb::consent_check_client::ConsentCheckClient<tonic::transport::Channel>;

pub async fn connect(addr: &str) -> Result<Client, ClientError> {
    pb::consent_check_client::ConsentCheckClient::connect(addr.to_owned())
        .await
        .map(|c| c.max_decoding_message_size(16 * 1024 * 1024))
        .map_err(|source| ClientError::Connect {
            addr: addr.to_owned(),
            source,
        })
}

/// Wraps a message with the API key metadata.
pub fn with_key<T>(message: T, key: &str) -> Result<Request<T>, ClientError> {
    let mut request = Request::new(message);
    let value: MetadataValue<_> = key.parse().map_err(|_| ClientError::BadKey)?;
    request.metadata_mut().insert(API_KEY_HEADER, value);
    Ok(request)
}

fn rtype(c: &ClientArgs) -> pb::RecipientType {
    if c.tacir {
        pb::RecipientType::Tacir
    } else {
        pb::RecipientType::Bireysel
    }
}

/// Human form of a decision: `ALLOW CONSENT_REGISTERED (ONAY, HS_WEB, 2025-01-02 10:00, data age 12 ms)`.
pub fn describe(d: &pb::Decision) -> String {
    let verdict = d.verdict().as_str_name();
    let reason = d.reason().as_str_name();
    let mut text = format!("{verdict} {reason}");
    if d.status() != pb::ConsentStatus::Unspecified {
        let _ = write!(
            text,
            " ({}{}, {}, {}",
            d.status().as_str_name(),
            if d.pending_registration {
                " pending İYS"
            } else {
                ""
            },
            d.source().as_str_name(),
            d.consent_date
        );
        if !d.registration_deadline.is_empty() {
            let _ = write!(text, ", deadline {}", d.registration_deadline);
        }
        text.push(')');
    }
    if !d.error.is_empty() {
        let _ = write!(text, " [{}]", d.error);
    }
    let _ = write!(text, " data age {} ms", d.data_age_ms);
    text
}

pub async fn check(args: &CheckArgs) -> Result<(), ClientError> {
    let c = &args.client;
    let mut client = connect(&c.addr).await?;
    let request = pb::CheckRequest {
        brand_code: c.brand.into(),
        recipient: args.recipient.clone(),
        channel: pb_channel(c.channel).into(),
        recipient_type: rtype(c).into(),
        retailer_code: c.retailer.unwrap_or(0).into(),
        purpose: pb_purpose(c.purpose).into(),
    };
    let reply = client
        .check(with_key(request, &c.api_key)?)
        .await?
        .into_inner();
    let decision = reply.decision.unwrap_or_default();
    if args.json {
        let json = serde_json::json!({
            "recipient": reply.recipient,
            "verdict": decision.verdict().as_str_name(),
            "reason": decision.reason().as_str_name(),
            "status": decision.status().as_str_name(),
            "source": decision.source().as_str_name(),
            "consent_date": decision.consent_date,
            "pending_registration": decision.pending_registration,
            "registration_deadline": decision.registration_deadline,
            "data_age_ms": decision.data_age_ms,
        });
        println!("{json}");
    } else {
        println!("{} {}", reply.recipient, describe(&decision));
    }
    Ok(())
}

/// Streams a file through `Filter`: allowed recipients to stdout (or every recipient with its
/// verdict with `--reasons`). Returns (items, allowed).
pub async fn filter(args: &FilterArgs) -> Result<(u64, u64), ClientError> {
    let c = &args.client;
    let mut client = connect(&c.addr).await?;
    let reader: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match &args.file {
        Some(path) if path.as_os_str() != "-" => Box::new(tokio::fs::File::open(path).await?),
        _ => Box::new(tokio::io::stdin()),
    };
    let mut lines = tokio::io::BufReader::new(reader).lines();
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::FilterRequest>(4);
    let (chunks_tx, mut chunks_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
    let header = pb::FilterRequest {
        brand_code: c.brand.into(),
        channel: pb_channel(c.channel).into(),
        recipient_type: rtype(c).into(),
        retailer_code: c.retailer.unwrap_or(0).into(),
        purpose: pb_purpose(c.purpose).into(),
        ..pb::FilterRequest::default()
    };
    let chunk_size = args.chunk.clamp(1, crate::api::MAX_CHUNK);
    let reader_task = tokio::spawn(async move {
        let mut first = true;
        loop {
            let mut batch = Vec::with_capacity(chunk_size);
            while batch.len() < chunk_size {
                match lines.next_line().await? {
                    Some(line) if line.trim().is_empty() => {}
                    Some(line) => batch.push(line.trim().to_owned()),
                    None => break,
                }
            }
            if batch.is_empty() {
                return Ok::<(), std::io::Error>(());
            }
            let mut req = if first {
                header.clone()
            } else {
                pb::FilterRequest::default()
            };
            first = false;
            req.recipients.clone_from(&batch);
            let last = batch.len() < chunk_size;
            if chunks_tx.send(batch).is_err() || tx.send(req).await.is_err() {
                return Ok(());
            }
            if last {
                return Ok(());
            }
        }
    });
    let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut responses = client
        .filter(with_key(outbound, &c.api_key)?)
        .await?
        .into_inner();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut items, mut allowed) = (0u64, 0u64);
    let mut pending: VecDeque<Vec<String>> = VecDeque::new();
    while let Some(reply) = responses.next().await {
        let reply = reply?;
        let chunk = match pending.pop_front() {
            Some(chunk) => chunk,
            None => chunks_rx.recv().await.unwrap_or_default(),
        };
        let reasons: std::collections::HashMap<u32, i32> =
            reply.rejected.iter().map(|r| (r.index, r.reason)).collect();
        for (i, recipient) in chunk.iter().enumerate() {
            let ok = reply
                .allowed
                .get(i / 8)
                .is_some_and(|b| b & (1 << (i % 8)) != 0);
            items += 1;
            if ok {
                allowed += 1;
            }
            if args.reasons {
                let reason = if ok {
                    "ALLOW".to_owned()
                } else {
                    pb::Reason::try_from(reasons.get(&(i as u32)).copied().unwrap_or(0))
                        .map_or("UNKNOWN", |r| r.as_str_name())
                        .to_owned()
                };
                writeln!(out, "{recipient}\t{reason}")?;
            } else if ok {
                writeln!(out, "{recipient}")?;
            }
        }
        while let Ok(next) = chunks_rx.try_recv() {
            pending.push_back(next);
        }
    }
    out.flush()?;
    reader_task.await.map_err(std::io::Error::other)??;
    Ok((items, allowed))
}
