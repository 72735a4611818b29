//! `iysgate.v1.ConsentRecords`, the gRPC face of the write path: authenticates and admits the
//! call like every other, then hands the inputs to [`record_consents`] (İYS's own validation,
//! every violation named; the batch stored durably, applied to the index and published to the
//! other replicas before it answers). The rules live in `write::record`; this file maps them
//! to protobuf and status codes. The panel's hand-recorded consents take the same function.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::api::{self, ConsentService};
use crate::domain::time::format_iys;
use crate::pb;
use crate::write::evidence::{EvidenceStore, Recorder};

use super::status::evidence_status;
use crate::write::record::{MAX_RECORDS, RecordError, Recording, Violation, record_consents};

impl ConsentService {
    async fn record(
        &self,
        store: &EvidenceStore,
        brand: u32,
        prefix: impl Fn(usize) -> String + Sync,
        inputs: &[pb::ConsentInput],
        recorder: &Recorder,
    ) -> Result<Vec<pb::RecordedConsent>, Status> {
        let recorded = record_consents(
            &Recording {
                store,
                checker: self.checker(),
                consents: self.consents(),
                shared: self.shared(),
            },
            brand,
            &prefix,
            inputs,
            recorder,
        )
        .await
        .map_err(|e| match e {
            RecordError::Invalid(violations) => refuse(&violations),
            RecordError::Store(e) => evidence_status(e, &prefix),
        })?;
        Ok(recorded
            .into_iter()
            .map(|r| pb::RecordedConsent {
                event_id: u64::try_from(r.id.0).unwrap_or_default(),
                duplicate: r.duplicate,
                upload_deadline: format_iys(r.deadline),
                decision: r.answer.map(|a| {
                    crate::pb::convert::decision_pb(&a.decision, a.data_age.as_millis() as u64)
                }),
                stored_recipient: r.key.recipient.to_string(),
            })
            .collect())
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
