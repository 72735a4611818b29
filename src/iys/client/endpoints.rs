//! The İYS endpoints [`IysClient`] calls: pull changes, single and batch add, batch poll,
//! consent status, the daily changes file and the daily agreement (read and confirm).

use chrono::NaiveDate;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::connect::Connect;

use super::transport::{Call, Parsed, encode, json, parse_errors, to_body};
use super::types::{
    self, AddResult, Agreement, AgreementCaptured, BatchAccepted, BatchItemResult, ChangesPage,
    ConsentRequest, StatusRecord,
};
use super::{IysClient, IysError, MAX_BATCH, MAX_PULL_LIMIT, PullSource};

/// 404 codes that mean "wrong provider/brand", not "no consent record".
const NOT_FOUND_CONFIG_CODES: [&str; 2] = ["H001", "H018"];

impl<C> IysClient<C>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    /// One page of consent changes (§5.8): `GET /sps/{iysCode}/brands/{brandCode}/consents/
    /// changes?source=&after=&limit=`.
    ///
    /// Follow `after` until a short page or an empty one. An empty page (İYS 204) has
    /// `after: None`: the caller must keep the cursor it already has. Persist the cursor per
    /// (brand, source).
    pub async fn pull_changes(
        &self,
        iys_code: u64,
        brand_code: u64,
        source: PullSource,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ChangesPage, IysError> {
        if limit == 0 || limit > MAX_PULL_LIMIT {
            return Err(IysError::InvalidRequest(format!(
                "pull limit must be 1..={MAX_PULL_LIMIT}"
            )));
        }
        let mut path = format!(
            "/sps/{iys_code}/brands/{brand_code}/consents/changes?source={}&limit={limit}",
            source.as_str()
        );
        if let Some(after) = after.filter(|a| !a.is_empty()) {
            path.push_str("&after=");
            path.push_str(&encode(after));
        }
        let call = Call {
            op: "pull_changes",
            method: Method::GET,
            path,
            body: None,
        };
        self.execute(&call, |status, body| match status {
            StatusCode::OK => json(body),
            StatusCode::NO_CONTENT => Parsed::Value(ChangesPage::default()),
            _ => Parsed::NotMine,
        })
        .await
    }

    /// Adds or updates one consent through the v2 endpoint (§5.2), which returns the same
    /// transactionId for an identical re-send, so retries are safe.
    pub async fn add_consent(
        &self,
        iys_code: u64,
        brand_code: u64,
        consent: &ConsentRequest,
    ) -> Result<AddResult, IysError> {
        let call = Call {
            op: "add_consent",
            method: Method::POST,
            path: format!("/v2/sps/{iys_code}/brands/{brand_code}/consents"),
            body: Some(to_body(consent)?),
        };
        self.execute(&call, |status, body| match status {
            StatusCode::OK | StatusCode::CREATED => json(body),
            _ => Parsed::NotMine,
        })
        .await
    }

    /// Submits up to 1000 consents (§5.3, v2 path; bare JSON array). 202 means accepted, not
    /// written: poll with [`IysClient::poll_batch`] no earlier than 300 s later. A validation
    /// failure rejects the whole batch with 422 → [`IysError::Business`] whose items carry
    /// the 0-based `index` of the offending consent.
    ///
    /// Retried on transient failures: on the v2 path a re-sent identical consent points to
    /// the original request rather than being applied twice.
    pub async fn add_consents_batch(
        &self,
        iys_code: u64,
        brand_code: u64,
        consents: &[ConsentRequest],
    ) -> Result<BatchAccepted, IysError> {
        if consents.is_empty() || consents.len() > MAX_BATCH {
            return Err(IysError::InvalidRequest(format!(
                "a batch holds 1..={MAX_BATCH} consents, got {}",
                consents.len()
            )));
        }
        let call = Call {
            op: "add_consents_batch",
            method: Method::POST,
            path: format!("/v2/sps/{iys_code}/brands/{brand_code}/consents/request"),
            body: Some(to_body(consents)?),
        };
        self.execute(&call, |status, body| match status {
            StatusCode::ACCEPTED | StatusCode::OK => json(body),
            _ => Parsed::NotMine,
        })
        .await
    }

    /// Results of a batch (§5.4, v2). An empty list means "not processed yet", not failure;
    /// the batch is complete when no item is `Enqueue`.
    pub async fn poll_batch(
        &self,
        iys_code: u64,
        brand_code: u64,
        request_id: &str,
    ) -> Result<Vec<BatchItemResult>, IysError> {
        if request_id.is_empty() {
            return Err(IysError::InvalidRequest("empty requestId".into()));
        }
        let call = Call {
            op: "poll_batch",
            method: Method::GET,
            path: format!(
                "/v2/sps/{iys_code}/brands/{brand_code}/consents/request/{}",
                encode(request_id)
            ),
            body: None,
        };
        self.execute(&call, |status, body| match status {
            StatusCode::OK if body.iter().all(u8::is_ascii_whitespace) => Parsed::Value(Vec::new()),
            StatusCode::OK => json(body),
            StatusCode::NO_CONTENT => Parsed::Value(Vec::new()),
            _ => Parsed::NotMine,
        })
        .await
    }

    /// The current consent of one (recipient, recipientType, type) (§5.5). `None` when İYS
    /// answers 404 for the record (a 404 with H001/H018 — unknown provider or brand — is a
    /// [`IysError::Business`] instead). İYS allows 1000 of these per hour per IP.
    pub async fn consent_status(
        &self,
        iys_code: u64,
        brand_code: u64,
        recipient: &str,
        recipient_type: &str,
        channel: &str,
    ) -> Result<Option<StatusRecord>, IysError> {
        let query = types::StatusQuery {
            recipient,
            recipient_type,
            channel,
        };
        let call = Call {
            op: "consent_status",
            method: Method::POST,
            path: format!("/sps/{iys_code}/brands/{brand_code}/consents/status"),
            body: Some(to_body(&query)?),
        };
        self.execute(&call, |status, body| match status {
            StatusCode::OK => match json(body) {
                Parsed::Value(v) => Parsed::Value(Some(v)),
                Parsed::Malformed(e) => Parsed::Malformed(e),
                Parsed::NotMine => Parsed::NotMine,
            },
            StatusCode::NOT_FOUND => {
                let wrong_target = parse_errors(body)
                    .iter()
                    .any(|e| NOT_FOUND_CONFIG_CODES.contains(&e.code.as_str()));
                if wrong_target {
                    Parsed::NotMine
                } else {
                    Parsed::Value(None)
                }
            }
            _ => Parsed::NotMine,
        })
        .await
    }

    /// The daily changes CSV for `date` (§5.12; at most 7 days back), as text. `None` when
    /// İYS answers 204 ("file not found", e.g. not produced yet).
    pub async fn daily_changes_file(
        &self,
        iys_code: u64,
        brand_code: u64,
        date: NaiveDate,
    ) -> Result<Option<String>, IysError> {
        let call = Call {
            op: "daily_changes_file",
            method: Method::GET,
            path: format!(
                "/sps/{iys_code}/brands/{brand_code}/changes/{}/file",
                date.format("%Y-%m-%d")
            ),
            body: None,
        };
        self.execute(&call, |status, body| match status {
            StatusCode::OK => match std::str::from_utf8(body) {
                Ok(text) => Parsed::Value(Some(text.to_owned())),
                Err(e) => {
                    Parsed::Malformed(format!("CSV is not UTF-8 at byte {}", e.valid_up_to()))
                }
            },
            StatusCode::NO_CONTENT => Parsed::Value(None),
            _ => Parsed::NotMine,
        })
        .await
    }

    /// The reconciliation record for `date` (§5.12): hash of the daily CSV and whether the
    /// agreement was recorded. `None` on 204 ("no value").
    pub async fn agreement(
        &self,
        iys_code: u64,
        brand_code: u64,
        date: NaiveDate,
    ) -> Result<Option<Agreement>, IysError> {
        let call = Call {
            op: "agreement",
            method: Method::GET,
            path: format!(
                "/sps/{iys_code}/brands/{brand_code}/agreements/{}",
                date.format("%Y-%m-%d")
            ),
            body: None,
        };
        self.execute(&call, |status, body| match status {
            StatusCode::OK => match json(body) {
                Parsed::Value(v) => Parsed::Value(Some(v)),
                Parsed::Malformed(e) => Parsed::Malformed(e),
                Parsed::NotMine => Parsed::NotMine,
            },
            StatusCode::NO_CONTENT => Parsed::Value(None),
            _ => Parsed::NotMine,
        })
        .await
    }

    /// Records that the brand agrees with İYS's daily change file of `date` (§5.12,
    /// `PUT …/agreements/{date}` with `{"agreementStatus":true}`). True when İYS says the
    /// agreement was captured.
    pub async fn confirm_agreement(
        &self,
        iys_code: u64,
        brand_code: u64,
        date: NaiveDate,
    ) -> Result<bool, IysError> {
        let call = Call {
            op: "confirm_agreement",
            method: Method::PUT,
            path: format!(
                "/sps/{iys_code}/brands/{brand_code}/agreements/{}",
                date.format("%Y-%m-%d")
            ),
            body: Some(Bytes::from_static(br#"{"agreementStatus":true}"#)),
        };
        self.execute(&call, |status, body| match status {
            StatusCode::OK => match json::<AgreementCaptured>(body) {
                Parsed::Value(v) => Parsed::Value(v.agreement_captured),
                Parsed::Malformed(e) => Parsed::Malformed(e),
                Parsed::NotMine => Parsed::NotMine,
            },
            _ => Parsed::NotMine,
        })
        .await
    }
}
