//! `iysgate.v1.Admin`: brands, API clients and the daily action report over gRPC, and the
//! reconciliation with İYS on demand. Brand and client changes go to the evidence store (so
//! every replica has them) and take effect on this replica at once; other replicas pick them
//! up on their next reload of the stored clients (`--clients-reload`).
//!
//! Admin calls need an admin key (`--admin-key-sha256`); GetDailyReport also answers a client
//! granted the brand.

use std::sync::Arc;

use chrono::NaiveDate;
use tonic::{Request, Response, Status};

use super::status::{reconcile_status, served_keys_status, store_status};
use crate::api::{self, ConsentService};
use crate::auth::{self, ApiKeys, RetailerGrant};
use crate::domain::BrandPolicy;
use crate::iys::client::IysClient;
use crate::pb;
use crate::write::evidence::{Brand, EvidenceStore};
use crate::write::reconcile::{Reconciliation, Serving, Target};
use crate::write::report::DailyReport;

/// The İYS account reconciliation uses: its client and the provider's İYS code.
#[derive(Clone)]
pub struct IysAccount {
    pub client: IysClient,
    pub iys_code: u32,
}

pub struct AdminService {
    consent: Arc<ConsentService>,
    holdings: Serving,
    store: Arc<EvidenceStore>,
    /// SHA-256 digests of the admin keys.
    admin_keys: Vec<[u8; 32]>,
    /// The keys given by flags and files; stored clients are served on top of them.
    base_keys: Arc<ApiKeys>,
    iys: Option<IysAccount>,
}

impl AdminService {
    pub fn new(
        consent: Arc<ConsentService>,
        holdings: Serving,
        store: Arc<EvidenceStore>,
        admin_keys: Vec<[u8; 32]>,
        base_keys: Arc<ApiKeys>,
        iys: Option<IysAccount>,
    ) -> Self {
        Self {
            consent,
            holdings,
            store,
            admin_keys,
            base_keys,
            iys,
        }
    }

    pub fn into_server(self) -> pb::admin_server::AdminServer<Self> {
        pb::admin_server::AdminServer::new(self)
    }

    fn admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let key = api::presented_key(request)
            .ok_or_else(|| Status::unauthenticated("missing API key (x-api-key metadata)"))?;
        if self.admin_keys.is_empty() {
            return Err(Status::permission_denied(
                "no admin key is configured on this server (--admin-key-sha256)",
            ));
        }
        let digest = auth::hash_key(key);
        if self.admin_keys.contains(&digest) {
            Ok(())
        } else {
            Err(Status::permission_denied("not an admin API key"))
        }
    }

    /// Serves the stored clients (with the flag and file keys) on this replica from now on.
    async fn reload_clients(&self) -> Result<(), Status> {
        let keys = crate::write::accounts::served_keys(&self.base_keys, &self.store)
            .await
            .map_err(served_keys_status)?;
        self.consent.replace_keys(Arc::new(keys));
        Ok(())
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.consent.checker().clock().now_utc()
    }

    fn today(&self) -> NaiveDate {
        self.consent.checker().clock().now_turkey().date()
    }

    async fn listed_client(&self, name: &str) -> Result<pb::AdminClient, Status> {
        let clients = self.store.clients().await.map_err(store_status)?;
        clients
            .iter()
            .find(|c| c.name == name)
            .map(client_pb)
            .ok_or_else(|| Status::not_found(format!("API client {name:?} is not registered")))
    }
}

fn date_field(text: &str, default: NaiveDate) -> Result<NaiveDate, Status> {
    if text.is_empty() {
        return Ok(default);
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        api::invalid_status(&crate::pb::convert::invalid(
            "date",
            format!("{text:?} is not YYYY-MM-DD"),
        ))
    })
}

/// A refused field of an Admin request; `field` may be a path (`grants[2].brand_code`).
fn refuse_field(field: &str, why: &str) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("{field}: {why}"),
        ErrorDetails::with_bad_request_violation(field, why),
    )
}

/// A code field (iys_code, brand_code, a retailer code) as a `u32`, see [`crate::pb::convert::narrow_code`].
fn code(field: &str, value: u64) -> Result<u32, Status> {
    crate::pb::convert::narrow_code(value).map_err(|why| refuse_field(field, &why.to_string()))
}

/// A grant from the wire; `prefix` names it in a refusal (`grant.`, `grants[0].`).
fn grant_of(prefix: &str, grant: &pb::BrandGrant) -> Result<(u32, RetailerGrant), Status> {
    let brand = code(&format!("{prefix}brand_code"), grant.brand_code)?;
    let retailers = match &grant.retailers {
        Some(r) if r.any => RetailerGrant::Any,
        Some(r) if !r.codes.is_empty() => RetailerGrant::Only(
            r.codes
                .iter()
                .map(|&c| code(&format!("{prefix}retailers.codes"), c))
                .collect::<Result<_, _>>()?,
        ),
        _ => RetailerGrant::None,
    };
    Ok((brand, retailers))
}

fn grant_pb(brand: u32, grant: &RetailerGrant) -> pb::BrandGrant {
    let retailers = match grant {
        RetailerGrant::None => pb::RetailerGrant::default(),
        RetailerGrant::Any => pb::RetailerGrant {
            any: true,
            codes: Vec::new(),
        },
        RetailerGrant::Only(codes) => pb::RetailerGrant {
            any: false,
            codes: codes.iter().map(|&c| u64::from(c)).collect(),
        },
    };
    pb::BrandGrant {
        brand_code: brand.into(),
        retailers: Some(retailers),
    }
}

fn client_pb(c: &crate::write::evidence::ApiClient) -> pb::AdminClient {
    pb::AdminClient {
        name: c.name.clone(),
        grants: c.grants.iter().map(|(b, g)| grant_pb(*b, g)).collect(),
        key_sha256_prefix: auth::to_hex(&c.key_sha256[..6]),
    }
}

fn brand_pb(b: &Brand) -> pb::AdminBrand {
    pb::AdminBrand {
        iys_code: b.iys_code,
        brand_code: b.brand_code,
        name: b.name.clone(),
        allow_unregistered_tacir: b.policy.allow_unregistered_tacir,
    }
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> Vec<pb::Count> {
    map.iter()
        .map(|(key, count)| pb::Count {
            key: key.clone(),
            count: *count,
        })
        .collect()
}

fn reconciliation_pb(r: &Reconciliation) -> pb::Reconciliation {
    pb::Reconciliation {
        reconciled_at: r.reconciled_at.to_rfc3339(),
        sha384: r.sha384.clone().unwrap_or_default(),
        file_verified: r.file_verified,
        file_rows: r.file_rows,
        changes: r
            .changes
            .iter()
            .map(|(key, t)| pb::ChangeTally {
                key: key.clone(),
                approvals: t.approvals,
                rejections: t.rejections,
            })
            .collect(),
        new_rets_from_iys: r.new_rets_from_iys,
        uploads_matched: r.uploads_matched,
        hs_from_elsewhere: r.hs_from_elsewhere,
        mismatches: r
            .mismatches
            .iter()
            .map(|m| pb::Mismatch {
                kind: m.kind.as_str().to_owned(),
                transaction_id: m.transaction_id.clone(),
                recipient_masked: m.recipient.clone(),
                channel: m.channel.clone(),
                recipient_type: m.recipient_type.clone(),
                event_id: m.event_id.unwrap_or_default(),
                detail: m.detail.clone(),
                repaired: m.repaired,
            })
            .collect(),
        repaired: r.repaired,
        agreement: r.agreement.as_str().to_owned(),
    }
}

/// The report as the gRPC message.
pub fn report_pb(r: &DailyReport) -> pb::DailyReport {
    pb::DailyReport {
        brand_code: r.brand,
        date: r.date.format("%Y-%m-%d").to_string(),
        recorded: counts(&r.recorded),
        recorded_total: r.recorded_total,
        registered: r.registered,
        pending: r.pending,
        expired: r.expired,
        refused: counts(&r.refused),
        at_risk_now: r.at_risk_now,
        expired_now: r.expired_now,
        reconciliation: r.reconciliation.as_ref().map(reconciliation_pb),
    }
}

fn counts_back(list: &[pb::Count]) -> std::collections::BTreeMap<String, u64> {
    list.iter().map(|c| (c.key.clone(), c.count)).collect()
}

/// A field of a `DailyReport` message that does not read back as a report; each variant
/// names the field and carries the value received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportDecodeError {
    #[error("date {0:?} is not YYYY-MM-DD")]
    Date(String),
    #[error("reconciled_at {0:?}")]
    ReconciledAt(String),
    #[error("mismatch kind {0:?}")]
    MismatchKind(String),
    #[error("agreement {0:?}")]
    Agreement(String),
}

/// The gRPC message back as the report (for the CLI's table, JSON and CSV).
///
/// # Errors
/// A field that does not read back (names it).
pub fn report_from_pb(p: &pb::DailyReport) -> Result<DailyReport, ReportDecodeError> {
    use crate::write::reconcile::{Agreement, Mismatch, MismatchKind, Tally};
    let date = NaiveDate::parse_from_str(&p.date, "%Y-%m-%d")
        .map_err(|_| ReportDecodeError::Date(p.date.clone()))?;
    let reconciliation = match &p.reconciliation {
        None => None,
        Some(r) => Some(Reconciliation {
            brand: p.brand_code,
            date,
            reconciled_at: chrono::DateTime::parse_from_rfc3339(&r.reconciled_at)
                .map_err(|_| ReportDecodeError::ReconciledAt(r.reconciled_at.clone()))?
                .to_utc(),
            sha384: Some(r.sha384.clone()).filter(|h| !h.is_empty()),
            file_verified: r.file_verified,
            file_rows: r.file_rows,
            changes: r
                .changes
                .iter()
                .map(|c| {
                    let t = Tally {
                        approvals: c.approvals,
                        rejections: c.rejections,
                    };
                    (c.key.clone(), t)
                })
                .collect(),
            new_rets_from_iys: r.new_rets_from_iys,
            uploads_matched: r.uploads_matched,
            hs_from_elsewhere: r.hs_from_elsewhere,
            mismatches: r
                .mismatches
                .iter()
                .map(|m| {
                    let kind = [
                        MismatchKind::NotInIndex,
                        MismatchKind::Differs,
                        MismatchKind::MissingAtIys,
                        MismatchKind::Unreadable,
                    ]
                    .into_iter()
                    .find(|k| k.as_str() == m.kind)
                    .ok_or_else(|| ReportDecodeError::MismatchKind(m.kind.clone()))?;
                    Ok(Mismatch {
                        kind,
                        transaction_id: m.transaction_id.clone(),
                        recipient: m.recipient_masked.clone(),
                        channel: m.channel.clone(),
                        recipient_type: m.recipient_type.clone(),
                        event_id: Some(m.event_id).filter(|id| *id != 0),
                        detail: m.detail.clone(),
                        repaired: m.repaired,
                    })
                })
                .collect::<Result<_, ReportDecodeError>>()?,
            repaired: r.repaired,
            agreement: [
                Agreement::Confirmed,
                Agreement::AlreadyConfirmed,
                Agreement::NotRequested,
                Agreement::Withheld,
                Agreement::NoFile,
            ]
            .into_iter()
            .find(|a| a.as_str() == r.agreement)
            .ok_or_else(|| ReportDecodeError::Agreement(r.agreement.clone()))?,
        }),
    };
    Ok(DailyReport {
        brand: p.brand_code,
        date,
        recorded: counts_back(&p.recorded),
        recorded_total: p.recorded_total,
        registered: p.registered,
        pending: p.pending,
        expired: p.expired,
        refused: counts_back(&p.refused),
        at_risk_now: p.at_risk_now,
        expired_now: p.expired_now,
        reconciliation,
    })
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn add_brand(
        &self,
        request: Request<pb::AddBrandRequest>,
    ) -> Result<Response<pb::AdminBrand>, Status> {
        self.admin(&request)?;
        let r = request.into_inner();
        let iys_code = code("iys_code", r.iys_code)?;
        let brand_code = code("brand_code", r.brand_code)?;
        if iys_code == 0 {
            return Err(api::invalid_status(&crate::pb::convert::invalid(
                "iys_code", "required",
            )));
        }
        if brand_code == 0 {
            return Err(api::invalid_status(&crate::pb::convert::invalid(
                "brand_code",
                "required",
            )));
        }
        let brand = Brand {
            brand_code,
            iys_code,
            name: r.name,
            policy: BrandPolicy {
                allow_unregistered_tacir: r.allow_unregistered_tacir,
            },
        };
        crate::write::accounts::add_brand(&self.store, &brand, self.now())
            .await
            .map_err(store_status)?;
        Ok(Response::new(brand_pb(&brand)))
    }

    async fn list_brands(
        &self,
        request: Request<pb::ListBrandsRequest>,
    ) -> Result<Response<pb::ListBrandsResponse>, Status> {
        self.admin(&request)?;
        let brands = self.store.brands().await.map_err(store_status)?;
        Ok(Response::new(pb::ListBrandsResponse {
            brands: brands.iter().map(brand_pb).collect(),
        }))
    }

    async fn add_client(
        &self,
        request: Request<pb::AddClientRequest>,
    ) -> Result<Response<pb::AddClientResponse>, Status> {
        self.admin(&request)?;
        let r = request.into_inner();
        if r.name.is_empty() {
            return Err(api::invalid_status(&crate::pb::convert::invalid(
                "name", "required",
            )));
        }
        let grants = r
            .grants
            .iter()
            .enumerate()
            .map(|(i, g)| grant_of(&format!("grants[{i}]."), g))
            .collect::<Result<Vec<_>, _>>()?;
        let now = self.now();
        let secret = auth::generate_key()
            .map_err(|e| Status::unavailable(format!("no OS randomness for the key: {e}")))?;
        self.store
            .add_client(&r.name, auth::hash_key(&secret), now)
            .await
            .map_err(store_status)?;
        for (brand, retailers) in &grants {
            self.store
                .grant(&r.name, *brand, retailers, now)
                .await
                .map_err(store_status)?;
        }
        self.reload_clients().await?;
        Ok(Response::new(pb::AddClientResponse {
            client: Some(self.listed_client(&r.name).await?),
            api_key: secret,
        }))
    }

    async fn grant_brand(
        &self,
        request: Request<pb::GrantBrandRequest>,
    ) -> Result<Response<pb::AdminClient>, Status> {
        self.admin(&request)?;
        let r = request.into_inner();
        let grant = r.grant.ok_or_else(|| {
            api::invalid_status(&crate::pb::convert::invalid("grant", "required"))
        })?;
        let (brand, retailers) = grant_of("grant.", &grant)?;
        self.store
            .grant(&r.client, brand, &retailers, self.now())
            .await
            .map_err(store_status)?;
        self.reload_clients().await?;
        Ok(Response::new(self.listed_client(&r.client).await?))
    }

    async fn revoke_brand(
        &self,
        request: Request<pb::RevokeBrandRequest>,
    ) -> Result<Response<pb::RevokeBrandResponse>, Status> {
        self.admin(&request)?;
        let r = request.into_inner();
        let brand = code("brand_code", r.brand_code)?;
        let revoked = self
            .store
            .revoke(&r.client, brand)
            .await
            .map_err(store_status)?;
        self.reload_clients().await?;
        Ok(Response::new(pb::RevokeBrandResponse { revoked }))
    }

    async fn list_clients(
        &self,
        request: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        self.admin(&request)?;
        let clients = self.store.clients().await.map_err(store_status)?;
        Ok(Response::new(pb::ListClientsResponse {
            clients: clients.iter().map(client_pb).collect(),
        }))
    }

    async fn reconcile(
        &self,
        request: Request<pb::ReconcileRequest>,
    ) -> Result<Response<pb::DailyReport>, Status> {
        self.admin(&request)?;
        let r = request.into_inner();
        let brand_code = code("brand_code", r.brand_code)?;
        let date = date_field(&r.date, self.today() - chrono::Duration::days(1))?;
        let Some(iys) = &self.iys else {
            return Err(Status::failed_precondition(
                "this server has no İYS account configured (--iys-url, --iys-code)",
            ));
        };
        let brands = self.store.brands().await.map_err(store_status)?;
        let brand = brands
            .iter()
            .find(|b| b.brand_code == brand_code)
            .ok_or_else(|| Status::not_found(format!("brand {brand_code} is not registered")))?;
        if brand.iys_code != iys.iys_code {
            return Err(Status::failed_precondition(format!(
                "brand {} belongs to provider {}; this server holds İYS credentials of {}",
                brand.brand_code, brand.iys_code, iys.iys_code
            )));
        }
        let target = Target {
            iys_code: iys.iys_code,
            brand: brand.brand_code,
            date,
            confirm: r.confirm,
        };
        let report = crate::write::report::reconcile_day(
            &iys.client,
            &self.store,
            &self.holdings,
            target,
            self.now(),
        )
        .await
        .map_err(reconcile_status)?;
        Ok(Response::new(report_pb(&report)))
    }

    async fn get_daily_report(
        &self,
        request: Request<pb::GetDailyReportRequest>,
    ) -> Result<Response<pb::DailyReport>, Status> {
        let client = match self.admin(&request) {
            Ok(()) => None,
            Err(_) => Some(self.consent.client(&request)?),
        };
        let brand = code("brand_code", request.get_ref().brand_code)?;
        if let Some(client) = client {
            api::permission(&client, brand, None)?;
        }
        let r = request.into_inner();
        let date = date_field(&r.date, self.today())?;
        let report = crate::write::report::daily_report(&self.store, brand, date, self.now())
            .await
            .map_err(store_status)?;
        Ok(Response::new(report_pb(&report)))
    }
}
