//! `iysgate.v1.ConsentRecords`, the gRPC face of the write path: authenticates and admits the
//! call like every other, turns each input into an event with [`record::new_event`] (İYS's
//! own validation, every violation named), stores the batch durably, applies it to the index
//! and publishes it to the other replicas before it answers. The rules live in
//! `write::record`; this file maps them to protobuf and status codes.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::api::{self, ConsentService};
use crate::domain::time::format_iys;
use crate::domain::{ConsentEvent, ConsentKey, ConsentRecord, Purpose, Registration};
use crate::pb;
use crate::write::evidence::{EvidenceStore, Recorded, Recorder};

use super::status::evidence_status;
use crate::write::record::{
    MAX_RECORDS, PUBLISH_WAIT, Published, Violation, new_event, publish_for_replicas,
};

impl ConsentService {
    async fn record(
        &self,
        store: &EvidenceStore,
        brand: u32,
        prefix: impl Fn(usize) -> String,
        inputs: &[pb::ConsentInput],
        recorder: &Recorder,
    ) -> Result<Vec<pb::RecordedConsent>, Status> {
        let mut events = Vec::with_capacity(inputs.len());
        let mut violations = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            let now = self.checker().clock().now_turkey();
            match new_event(
                brand,
                &prefix(i),
                input,
                recorder,
                now,
                self.checker().calendar(),
            ) {
                Ok(event) => events.push(event),
                Err(v) => violations.extend(v),
            }
        }
        if !violations.is_empty() {
            return Err(refuse(&violations));
        }
        let checker = self.checker();
        let recorded = store
            .record(&events, checker.clock().now_utc())
            .await
            .map_err(|e| evidence_status(e, &prefix))?;
        // Durable: now the index. A RET is DENY from the next check on; an ONAY is pending.
        let mut out = Vec::with_capacity(events.len());
        let mut keys = Vec::with_capacity(events.len());
        for (event, outcome) in events.into_iter().zip(recorded) {
            let (id, duplicate) = match outcome {
                Recorded::New(id) => (id, false),
                Recorded::Duplicate(id) => (id, true),
            };
            let deadline = checker.calendar().registration_deadline(event.consent_date);
            let key = ConsentKey {
                brand,
                recipient: event.recipient.clone(),
                recipient_type: event.recipient_type,
                channel: event.channel,
            };
            keys.push(key.clone());
            // Applying an event twice changes nothing (the latest-event rule), so a duplicate
            // is applied too: harmless, and it heals an index that missed the first.
            let _ = self.consents().apply(
                key,
                ConsentEvent {
                    status: event.status,
                    source: event.source,
                    consent_date: event.consent_date,
                    registration: Registration::Pending,
                    retailer_access: event.retailer_access.clone(),
                },
            );
            let text = event.recipient.to_string();
            let query = crate::check::Query {
                brand,
                recipient: &text,
                channel: event.channel,
                recipient_type: event.recipient_type,
                retailer: None,
                purpose: Purpose::Commercial,
            };
            let decision = checker.check(&query).ok().map(|a| {
                crate::pb::convert::decision_pb(&a.decision, a.data_age.as_millis() as u64)
            });
            out.push(pb::RecordedConsent {
                event_id: u64::try_from(id.0).unwrap_or_default(),
                duplicate,
                upload_deadline: format_iys(deadline),
                decision,
                stored_recipient: text,
            });
        }
        // Then every other replica: each key's current record here, which is the event just
        // recorded unless this replica already held a newer one.
        if let Some(shared) = self.shared() {
            let current: Vec<(ConsentKey, ConsentRecord)> = keys
                .into_iter()
                .filter_map(|key| self.consents().get(&key).map(|record| (key, record)))
                .collect();
            let published = publish_for_replicas(shared, &current, Published::Recorded);
            if tokio::time::timeout(PUBLISH_WAIT, published).await.is_err() {
                tracing::error!(
                    brand,
                    records = current.len(),
                    "publishing to the other replicas took too long; answering without it"
                );
                metrics::counter!("iysgate_record_publish_failures_total", "what" => Published::Recorded.as_str())
                    .increment(current.len() as u64);
            }
        }
        Ok(out)
    }

    fn evidence_store(&self) -> Result<Arc<EvidenceStore>, Status> {
        self.evidence().ok_or_else(|| {
            Status::unimplemented("this server records no consents (no evidence store)")
        })
    }
}

fn refuse(violations: &[Violation]) -> Status {
    let mut details = ErrorDetails::new();
    for v in violations {
        details.add_bad_request_violation(v.field.clone(), v.description.clone());
    }
    let first = violations
        .first()
        .map(|v| format!("{}: {}", v.field, v.description))
        .unwrap_or_default();
    let more = if violations.len() > 1 {
        format!(" (and {} more)", violations.len() - 1)
    } else {
        String::new()
    };
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("{first}{more}; nothing was stored"),
        details,
    )
}

fn recorder(client: &crate::auth::Client, key: Option<&str>) -> Recorder {
    Recorder {
        client: client.name.clone(),
        key_sha256: key.map(crate::auth::hash_key),
    }
}

#[tonic::async_trait]
impl pb::consent_records_server::ConsentRecords for ConsentService {
    async fn record_consent(
        &self,
        request: Request<pb::RecordConsentRequest>,
    ) -> Result<Response<pb::RecordConsentResponse>, Status> {
        let client = self.client(&request)?;
        let mut slot = Some(self.admit(&request, &client)?);
        self.charge(&client, 1, &request, &mut slot).await?;
        let store = self.evidence_store()?;
        let req = request.get_ref();
        let brand =
            crate::pb::convert::brand(req.brand_code).map_err(|e| api::invalid_status(&e))?;
        api::permission(&client, brand, None)?;
        let input = req.consent.as_ref().ok_or_else(|| {
            refuse(&[Violation {
                field: "consent".into(),
                description: "required".into(),
            }])
        })?;
        let who = recorder(&client, api::presented_key(&request));
        let mut recorded = self
            .record(
                &store,
                brand,
                |_| "consent.".to_owned(),
                std::slice::from_ref(input),
                &who,
            )
            .await?;
        Ok(Response::new(pb::RecordConsentResponse {
            recorded: recorded.pop(),
        }))
    }

    async fn record_consents(
        &self,
        request: Request<pb::RecordConsentsRequest>,
    ) -> Result<Response<pb::RecordConsentsResponse>, Status> {
        let client = self.client(&request)?;
        let mut slot = Some(self.admit(&request, &client)?);
        let req = request.get_ref();
        if req.consents.len() > MAX_RECORDS {
            return Err(refuse(&[Violation {
                field: "consents".into(),
                description: format!(
                    "{} consents; at most {MAX_RECORDS} per call",
                    req.consents.len()
                ),
            }]));
        }
        self.charge(&client, req.consents.len(), &request, &mut slot)
            .await?;
        let store = self.evidence_store()?;
        let brand =
            crate::pb::convert::brand(req.brand_code).map_err(|e| api::invalid_status(&e))?;
        api::permission(&client, brand, None)?;
        let who = recorder(&client, api::presented_key(&request));
        let recorded = self
            .record(
                &store,
                brand,
                |i| format!("consents[{i}]."),
                &req.consents,
                &who,
            )
            .await?;
        Ok(Response::new(pb::RecordConsentsResponse { recorded }))
    }
}
