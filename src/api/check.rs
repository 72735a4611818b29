//! `iysgate.v1.ConsentCheck`: Check, CheckBatch, Filter (see `filter.rs`) and GetConsent.

use crate::auth::Client;
use crate::check::{Answer, CheckError, Query, parse_recipient};
use crate::domain::time::format_iys;
use crate::domain::{
    ConsentKey, ConsentStatus, Purpose as DPurpose, Reason as DReason, Registration,
    Verdict as DVerdict,
};
use crate::pb;
use crate::pb::convert::{
    brand, channel, decision_pb, invalid, invalid_decision, pb_channel, pb_rtype, query,
    recipient_type, retailer, source_pb,
};
use crate::telemetry::{Rpc, fingerprint};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::admission::{grpc_timeout, permission, take_slot};
use super::filter::{FilterState, FilterStream, WithDeadline, chunk_len};
use super::status::invalid_status;
use super::{ConsentService, MAX_BATCH};

impl ConsentService {
    fn log_decision(&self, client: &Client, brand: u32, q: &Query<'_>, answer: &Answer) {
        let d = &answer.decision;
        self.metrics.decision(d.reason, q.purpose);
        if d.verdict == DVerdict::AllowExempt {
            // Exempt sends are the ones an auditor asks about: log them with their purpose.
            tracing::info!(
                target: "iysgate::audit",
                client = %client.name,
                brand,
                channel = %q.channel,
                purpose = q.purpose.as_str(),
                recipient = %fingerprint(&answer.recipient.to_string()),
                "allowed as exempt"
            );
        } else if d.reason == DReason::RegistrationExpired {
            tracing::warn!(
                brand,
                channel = %q.channel,
                recipient = %fingerprint(&answer.recipient.to_string()),
                "collected consent is past its İYS registration deadline"
            );
        }
    }

    fn check_one(&self, client: &Client, brand: u32, item: &pb::CheckBatchItem) -> pb::Decision {
        let fields = (
            item.channel,
            item.recipient_type,
            item.retailer_code,
            item.purpose,
        );
        let q = match query(brand, &item.recipient, fields) {
            Ok(q) => q,
            Err(e) => return invalid_decision(&e),
        };
        match self.checker.check(&q) {
            Ok(answer) => {
                self.log_decision(client, brand, &q, &answer);
                decision_pb(&answer.decision, answer.data_age.as_millis() as u64)
            }
            Err(CheckError::Invalid(e)) => invalid_decision(&e),
            Err(CheckError::Unavailable { age }) => pb::Decision {
                verdict: pb::Verdict::Unspecified.into(),
                data_age_ms: age.map_or(0, |a| a.as_millis() as u64),
                error: "UNAVAILABLE: consent data is stale; retry".into(),
                ..pb::Decision::default()
            },
        }
    }
}

/// The service's calls; [`pb::consent_check_server::ConsentCheck`] (below) counts each one's
/// status code around them.
impl ConsentService {
    async fn answer_check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let started = Instant::now();
        let client = self.client(&request)?;
        let mut slot = Some(self.admit(&request, &client)?);
        self.charge(&client, 1, &request, &mut slot).await?;
        let req = request.get_ref();
        let brand = brand(req.brand_code).map_err(|e| invalid_status(&e))?;
        permission(
            &client,
            brand,
            retailer(req.retailer_code).map_err(|e| invalid_status(&e))?,
        )?;
        let fields = (
            req.channel,
            req.recipient_type,
            req.retailer_code,
            req.purpose,
        );
        let q = query(brand, &req.recipient, fields).map_err(|e| invalid_status(&e))?;
        let answer = self.checker.check(&q).inspect_err(|e| match e {
            CheckError::Invalid(_) => self.metrics.invalid(1),
            CheckError::Unavailable { .. } => self.metrics.unavailable(),
        })?;
        self.log_decision(&client, brand, &q, &answer);
        let reply = pb::CheckResponse {
            decision: Some(decision_pb(
                &answer.decision,
                answer.data_age.as_millis() as u64,
            )),
            recipient: answer.recipient.to_string(),
        };
        self.metrics.latency(Rpc::Check, started.elapsed());
        Ok(Response::new(reply))
    }

    async fn answer_check_batch(
        &self,
        request: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        let started = Instant::now();
        let client = self.client(&request)?;
        let mut slot = Some(self.admit(&request, &client)?);
        let req = request.get_ref();
        let brand = brand(req.brand_code).map_err(|e| invalid_status(&e))?;
        permission(&client, brand, None)?;
        if req.items.len() > MAX_BATCH {
            return Err(invalid_status(&invalid(
                "items",
                format!(
                    "{} items; at most {MAX_BATCH} per batch (use Filter for lists)",
                    req.items.len()
                ),
            )));
        }
        // Rule 1 for every item before any lookup: a retailer the key is not granted refuses
        // the whole call, as it would a single Check.
        // A code that does not fit is that item's INVALID, answered by `check_one`.
        for item in &req.items {
            if let Ok(named) = retailer(item.retailer_code) {
                permission(&client, brand, named)?;
            }
        }
        self.charge(&client, req.items.len(), &request, &mut slot)
            .await?;
        let decisions: Vec<pb::Decision> = req
            .items
            .iter()
            .map(|item| self.check_one(&client, brand, item))
            .collect();
        let invalid_items = decisions
            .iter()
            .filter(|d| d.verdict == i32::from(pb::Verdict::Invalid))
            .count();
        self.metrics.invalid(invalid_items as u64);
        if decisions
            .iter()
            .any(|d| d.verdict == i32::from(pb::Verdict::Unspecified))
        {
            // Rule 7: an item would be ALLOWed from stale data; the whole batch is retryable.
            self.metrics.unavailable();
            return Err(Status::unavailable("consent data is stale; retry"));
        }
        self.metrics.latency(Rpc::CheckBatch, started.elapsed());
        Ok(Response::new(pb::CheckBatchResponse { decisions }))
    }

    fn answer_filter(
        &self,
        request: Request<Streaming<pb::FilterRequest>>,
    ) -> Result<Response<FilterStream>, Status> {
        let client = self.client(&request)?;
        // A stream is refused when the server is overloaded as it opens; after that it holds
        // a slot only while one of its chunks is answered, so idle streams hold nothing.
        drop(self.admit(&request, &client)?);
        let checker = Arc::clone(&self.checker);
        let metrics = Arc::clone(&self.metrics);
        let (in_flight, limits) = (Arc::clone(&self.in_flight), self.limits);
        let deadline = grpc_timeout(request.metadata());
        let mut state = FilterState::new();
        // A client's quota paces its Filter stream rather than failing it: each chunk waits
        // for its decisions, and HTTP/2 flow control slows the sender.
        let quota = client.quota.clone();
        let paced = request.into_inner().then(move |chunk| {
            let wait = match (&quota, &chunk) {
                (Some(quota), Ok(c)) => {
                    let n = chunk_len(c);
                    quota.reserve(u32::try_from(n).unwrap_or(u32::MAX), Instant::now())
                }
                _ => Duration::ZERO,
            };
            async move {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                chunk
            }
        });
        let stream = paced.map(move |chunk| {
            let chunk = chunk?;
            let _slot = take_slot(&in_flight, &client, &limits, &metrics)?;
            let started = Instant::now();
            let reply = state.answer(&checker, &metrics, &client, &chunk);
            metrics.latency(Rpc::Filter, started.elapsed());
            reply
        });
        Ok(Response::new(Box::pin(WithDeadline::new(
            Box::pin(stream),
            deadline,
        ))))
    }

    fn answer_get_consent(
        &self,
        request: &Request<pb::GetConsentRequest>,
    ) -> Result<Response<pb::GetConsentResponse>, Status> {
        let started = Instant::now();
        let client = self.client(request)?;
        let _slot = self.admit(request, &client)?;
        let req = request.get_ref();
        let brand = brand(req.brand_code).map_err(|e| invalid_status(&e))?;
        permission(&client, brand, None)?;
        let channel = channel(req.channel).map_err(|e| invalid_status(&e))?;
        let rtype = recipient_type(req.recipient_type).map_err(|e| invalid_status(&e))?;
        let recipient = parse_recipient(&req.recipient, channel).map_err(|e| invalid_status(&e))?;
        if !self.consents.records_complete() {
            // Started from the index checkpoint: checks are answered, but a record read now
            // could be missing or older than the one still loading.
            return Err(Status::unavailable(
                "this replica started from the index and is still loading the full records \
                 (seconds after its start); retry, or ask another replica",
            ));
        }
        let key = ConsentKey {
            brand,
            recipient,
            recipient_type: rtype,
            channel,
        };
        let record = self.consents.get(&key).map(|r| {
            let e = r.current;
            let (creation_date, transaction_id) = match &e.registration {
                Registration::Registered {
                    creation_date,
                    transaction_id,
                } => (format_iys(*creation_date), transaction_id.to_string()),
                Registration::Pending => (String::new(), String::new()),
            };
            let pending = e.is_pending();
            pb::ConsentRecord {
                recipient: key.recipient.to_string(),
                recipient_type: pb_rtype(rtype).into(),
                channel: pb_channel(channel).into(),
                status: match e.status {
                    ConsentStatus::Onay => pb::ConsentStatus::Onay,
                    ConsentStatus::Ret => pb::ConsentStatus::Ret,
                }
                .into(),
                source: source_pb(Some(e.source)),
                consent_date: format_iys(e.consent_date),
                creation_date,
                transaction_id,
                retailer_access: e.retailer_access.clone(),
                pending_registration: pending,
                registration_deadline: if pending && e.status == ConsentStatus::Onay {
                    format_iys(
                        self.checker
                            .calendar()
                            .registration_deadline(e.consent_date),
                    )
                } else {
                    String::new()
                },
            }
        });
        let q = Query {
            brand,
            recipient: &req.recipient,
            channel,
            recipient_type: rtype,
            retailer: None,
            purpose: DPurpose::Commercial,
        };
        let decision = match self.checker.check(&q) {
            Ok(a) => Some(decision_pb(&a.decision, a.data_age.as_millis() as u64)),
            Err(CheckError::Unavailable { age }) => Some(pb::Decision {
                error: "UNAVAILABLE: consent data is stale".into(),
                data_age_ms: age.map_or(0, |a| a.as_millis() as u64),
                ..pb::Decision::default()
            }),
            Err(CheckError::Invalid(e)) => return Err(invalid_status(&e)),
        };
        self.metrics.latency(Rpc::GetConsent, started.elapsed());
        Ok(Response::new(pb::GetConsentResponse { record, decision }))
    }
}

#[tonic::async_trait]
impl pb::consent_check_server::ConsentCheck for ConsentService {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let result = self.answer_check(request).await;
        self.metrics.call(Rpc::Check, &result);
        result
    }

    async fn check_batch(
        &self,
        request: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        let result = self.answer_check_batch(request).await;
        self.metrics.call(Rpc::CheckBatch, &result);
        result
    }

    type FilterStream = FilterStream;

    async fn filter(
        &self,
        request: Request<Streaming<pb::FilterRequest>>,
    ) -> Result<Response<Self::FilterStream>, Status> {
        let result = self.answer_filter(request);
        self.metrics.call(Rpc::Filter, &result);
        result
    }

    async fn get_consent(
        &self,
        request: Request<pb::GetConsentRequest>,
    ) -> Result<Response<pb::GetConsentResponse>, Status> {
        let result = self.answer_get_consent(&request);
        self.metrics.call(Rpc::GetConsent, &result);
        result
    }
}
