//! `Filter`: a stream of chunks answered with a bitmap of the allowed items and a reason for
//! every other; the stream's own deadline, and the per-chunk slot and quota pacing.

use crate::auth::Client;
use crate::check::{CheckError, Checker, FilterOutcome, FilterSpec, ItemOutcome};
use crate::pb;
use crate::pb::convert::{brand, channel, invalid, purpose, reason_pb, recipient_type, retailer};
use crate::telemetry::Metrics;
use std::pin::Pin;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::Status;

use super::{MAX_CHUNK, invalid_status, permission};

pub(crate) type FilterStream =
    Pin<Box<dyn Stream<Item = Result<pb::FilterResponse, Status>> + Send>>;

/// Ends a response stream with DEADLINE_EXCEEDED once the caller's deadline passes.
pub(crate) struct WithDeadline {
    inner: FilterStream,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    expired: bool,
}

impl WithDeadline {
    pub(crate) fn new(inner: FilterStream, timeout: Option<Duration>) -> Self {
        let deadline = timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        Self {
            inner,
            deadline,
            expired: false,
        }
    }
}

impl Stream for WithDeadline {
    type Item = Result<pb::FilterResponse, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future as _;
        if self.expired {
            return std::task::Poll::Ready(None);
        }
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            self.expired = true;
            return std::task::Poll::Ready(Some(Err(Status::deadline_exceeded(
                "the call's deadline passed before the stream ended",
            ))));
        }
        self.inner.as_mut().poll_next(cx)
    }
}

/// The state of one Filter stream: the settings of its first chunk (later chunks may change
/// them) and a reused output buffer.
pub(crate) struct FilterState {
    spec: Option<FilterSpec>,
    /// How answers name the items not allowed, from the chunk that set the spec.
    form: pb::RejectionForm,
    chunk: u64,
    out: FilterOutcome,
}

/// The lines of a `recipient_lines` field, borrowed from the message (one allocation per
/// chunk, none per recipient).
pub(crate) fn recipient_lines(text: &[u8]) -> Result<Vec<&str>, Status> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let text = std::str::from_utf8(text).map_err(|e| {
        invalid_status(&invalid(
            "recipient_lines",
            format!("not UTF-8 at byte {}", e.valid_up_to()),
        ))
    })?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    Ok(text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .collect())
}

/// Items in a Filter chunk, whatever its form, without parsing it. (The compiler vectorises
/// the byte count; a crate for it is not worth a dependency.)
#[allow(clippy::naive_bytecount)]
pub(crate) fn chunk_len(req: &pb::FilterRequest) -> usize {
    let lines = &req.recipient_lines;
    let line_count = if lines.is_empty() {
        0
    } else {
        lines.iter().filter(|&&b| b == b'\n').count() + usize::from(!lines.ends_with(b"\n"))
    };
    req.recipients.len() + req.phones.len() + line_count
}

impl FilterState {
    pub(crate) fn new() -> Self {
        Self {
            spec: None,
            form: pb::RejectionForm::RejectionList,
            chunk: 0,
            out: FilterOutcome::default(),
        }
    }

    pub(crate) fn spec_for(
        &mut self,
        client: &Client,
        req: &pb::FilterRequest,
    ) -> Result<FilterSpec, Status> {
        let spec = if let (Some(spec), 0) = (self.spec, req.brand_code) {
            spec
        } else {
            {
                let s = FilterSpec {
                    brand: brand(req.brand_code).map_err(|e| invalid_status(&e))?,
                    channel: channel(req.channel).map_err(|e| invalid_status(&e))?,
                    recipient_type: recipient_type(req.recipient_type)
                        .map_err(|e| invalid_status(&e))?,
                    retailer: retailer(req.retailer_code).map_err(|e| invalid_status(&e))?,
                    purpose: purpose(req.purpose).map_err(|e| invalid_status(&e))?,
                };
                permission(client, s.brand, s.retailer)?;
                self.form = pb::RejectionForm::try_from(req.rejections).map_err(|_| {
                    invalid_status(&invalid(
                        "rejections",
                        format!("{} is not a RejectionForm", req.rejections),
                    ))
                })?;
                s
            }
        };
        self.spec = Some(spec);
        Ok(spec)
    }

    pub(crate) fn answer(
        &mut self,
        checker: &Checker,
        metrics: &Metrics,
        client: &Client,
        req: &pb::FilterRequest,
    ) -> Result<pb::FilterResponse, Status> {
        let spec = self.spec_for(client, req)?;
        let lines = recipient_lines(&req.recipient_lines)?;
        let count = req.recipients.len() + req.phones.len() + lines.len();
        let forms = [
            ("recipients", req.recipients.len()),
            ("phones", req.phones.len()),
            ("recipient_lines", lines.len()),
        ];
        let mut used = forms.iter().filter(|(_, n)| *n > 0);
        let form = used.next().map_or("recipients", |(field, _)| *field);
        if let Some((second, _)) = used.next() {
            return Err(invalid_status(&invalid(
                second,
                "a chunk carries one of recipients, phones or recipient_lines",
            )));
        }
        if count > MAX_CHUNK {
            // Named as sent: the field the client filled.
            return Err(invalid_status(&invalid(
                form,
                format!("{count} items in one chunk; at most {MAX_CHUNK}"),
            )));
        }
        let result = if !req.phones.is_empty() {
            checker.filter_phones(&spec, &req.phones, &mut self.out)
        } else if !lines.is_empty() {
            checker.filter_recipients(&spec, &lines, &mut self.out)
        } else {
            checker.filter_recipients(&spec, &req.recipients, &mut self.out)
        };
        if let Err(e) = result {
            if matches!(e, CheckError::Unavailable { .. }) {
                metrics.unavailable();
            }
            return Err(e.into());
        }
        metrics.decisions(&self.out.reason_counts, spec.purpose);
        let invalid_items = self
            .out
            .rejected
            .iter()
            .filter(|(_, o)| matches!(o, ItemOutcome::Invalid))
            .count();
        let code = |outcome: ItemOutcome| match outcome {
            ItemOutcome::Denied(r) => reason_pb(r),
            ItemOutcome::Invalid => pb::Reason::InvalidRecipient,
        };
        let mut rejected = Vec::new();
        let mut reason_codes = prost::bytes::Bytes::new();
        match self.form {
            pb::RejectionForm::RejectionList => {
                rejected = self
                    .out
                    .rejected
                    .iter()
                    .map(|&(index, outcome)| pb::Rejection {
                        index,
                        reason: code(outcome).into(),
                    })
                    .collect();
            }
            pb::RejectionForm::RejectionCodes => {
                let mut codes = vec![0u8; count];
                for &(index, outcome) in &self.out.rejected {
                    // Reason numbers are below 256 (proto/iysgate/v1/consent.proto).
                    codes[index as usize] = i32::from(code(outcome)) as u8;
                }
                reason_codes = codes.into();
            }
            pb::RejectionForm::RejectionNone => {}
        }
        metrics.invalid(invalid_items as u64);
        if spec.purpose.is_exempt() && self.out.allowed_count > 0 {
            tracing::info!(
                target: "iysgate::audit",
                client = %client.name,
                brand = spec.brand,
                channel = %spec.channel,
                purpose = spec.purpose.as_str(),
                allowed = self.out.allowed_count,
                "filter chunk allowed as exempt"
            );
        }
        let reply = pb::FilterResponse {
            chunk: self.chunk,
            count: count as u32,
            allowed: prost::bytes::Bytes::copy_from_slice(&self.out.allowed),
            allowed_count: self.out.allowed_count,
            rejected,
            data_age_ms: self.out.data_age.as_millis() as u64,
            reason_codes,
        };
        self.chunk += 1;
        Ok(reply)
    }
}
