//! Importing a CSV of consents from the browser: upload, live progress, then the summary with
//! the refused rows by line and field (downloadable as CSV).
//!
//! The file is streamed to a private temporary file (mode 0600: it holds personal data) and
//! imported in the background by `write::import::import_serving`: the CLI's import, with each
//! chunk applied to the index and published to the other replicas once durable, as
//! RecordConsent applies what it records. The progress page polls `/import/{id}/status`
//! (without JavaScript it offers a refresh link). An import survives a closed browser; a
//! restarted process forgets the summary but not a stored row, and uploading the same file again
//! stores only what is missing (each row's idempotency key is the file's hash and its line).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Path, State as Extract};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use tokio::io::AsyncWriteExt;

use crate::panel::auth::Viewer;
use crate::panel::layout::{self, Lang};
use crate::panel::{PanelError, State};
use crate::write::evidence::Recorder;
use crate::write::import::{HEADER, ImportProgress, ImportSummary};

/// The largest file the panel takes (larger ones: `iysgate import` on the server).
pub const MAX_UPLOAD: usize = 256 << 20;
/// Imports running at once in this process.
const MAX_RUNNING: usize = 2;
/// Finished imports remembered (the oldest is forgotten first).
const KEPT: usize = 50;
/// Refused rows shown on the summary page (all of them are in the CSV).
const SHOWN: usize = 200;

pub fn routes() -> Router<State> {
    Router::new()
        .route(
            "/import",
            get(form)
                .post(upload)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD)),
        )
        .route("/import/{id}", get(job_page))
        .route("/import/{id}/status", get(status))
        .route("/import/{id}/refused.csv", get(refused_csv))
}

/// Where one import stands (a summary is shared, not copied: the status endpoint is polled
/// every second and a summary may hold a million refusals).
#[derive(Debug, Clone)]
pub enum Outcome {
    Running,
    Done(Arc<ImportSummary>),
    Failed(String),
}

/// One import of this process.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub brand: u32,
    pub user: String,
    pub file_name: String,
    pub started: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    pub progress: ImportProgress,
    pub outcome: Outcome,
}

/// Imports of this process, newest last.
#[derive(Debug, Default)]
pub struct Jobs {
    jobs: Mutex<Vec<Job>>,
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        // A job's fields are plain values: a panic mid-update leaves nothing half-true.
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        self.lock().iter().find(|j| j.id == id).cloned()
    }

    /// Adds a running job, unless [`MAX_RUNNING`] are running already (checked and added under
    /// one lock, so two uploads at once cannot both pass).
    fn start(&self, job: Job) -> bool {
        let mut jobs = self.lock();
        if jobs
            .iter()
            .filter(|j| matches!(j.outcome, Outcome::Running))
            .count()
            >= MAX_RUNNING
        {
            return false;
        }
        jobs.push(job);
        while jobs.len() > KEPT {
            let Some(oldest) = jobs
                .iter()
                .position(|j| !matches!(j.outcome, Outcome::Running))
            else {
                break;
            };
            jobs.remove(oldest);
        }
        true
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut Job)) {
        if let Some(job) = self.lock().iter_mut().find(|j| j.id == id) {
            change(job);
        }
    }

    /// The imports of the brands `viewer` may see, newest first.
    fn visible(&self, viewer: &Viewer) -> Vec<Job> {
        self.lock()
            .iter()
            .rev()
            .filter(|j| viewer.user.may_see(j.brand))
            .cloned()
            .collect()
    }
}

/// The job `id` if the viewer may see its brand (another brand's import is "not found").
fn job_of(panel: &State, viewer: &Viewer, id: &str) -> Result<Job, PanelError> {
    panel
        .imports
        .get(id)
        .filter(|j| viewer.user.may_see(j.brand))
        .ok_or(PanelError::NotFound)
}

fn state_text(lang: Lang, job: &Job) -> String {
    match &job.outcome {
        Outcome::Running => lang.t("sürüyor", "running").to_owned(),
        Outcome::Failed(_) => lang.t("durdu", "stopped").to_owned(),
        Outcome::Done(s) => format!(
            "{} {} · {} {}",
            layout::number(s.stored as u64),
            lang.t("kaydedildi", "stored"),
            layout::number(s.refused.len() as u64),
            lang.t("reddedildi", "refused")
        ),
    }
}

async fn form(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    lang: Lang,
) -> Result<Markup, PanelError> {
    let brands: Vec<_> = panel.brands_of(&viewer).await?;
    let jobs = panel.imports.visible(&viewer);
    let body = html! {
        @if viewer.user.role.writes() {
            p { (lang.t(
                "Başka yerde toplanmış izinleri bir CSV dosyasıyla yükleyin. Her satır, RecordConsent ile aynı kurallarla İYS'nin yapacağı gibi doğrulanır; hatalı satırlar satır ve alan adıyla listelenir, diğerleri kaydedilir, alıcı sorgusuna hemen yansır ve İYS'ye yüklenir. Aynı dosyayı yeniden yüklemek hiçbir şeyi iki kez kaydetmez.",
                "Upload consents collected elsewhere as a CSV. Every row is validated as İYS validates it, by the same rules as RecordConsent; refused rows are listed by line and field, the others are stored, take effect in checks at once and are uploaded to İYS. Uploading the same file again stores nothing twice.")) }
            form.stack method="post" action="/import" enctype="multipart/form-data" {
                (layout::csrf_field(&viewer))
                label { (lang.t("Marka", "Brand"))
                    select name="brand" id="brand" {
                        @for b in &brands { option value=(b.brand_code) { (b.brand_code) " " (b.name) } }
                    }
                }
                label { (lang.t("CSV dosyası", "CSV file"))
                    input type="file" name="file" id="file" accept=".csv,text/csv" required;
                }
                button type="submit" { (lang.t("İçe aktar", "Import")) }
            }
            details {
                summary { (lang.t("Dosya biçimi", "File format")) }
                p { (lang.t("İlk satır tam olarak şu başlık olmalıdır (RFC 4180 tırnaklama; retailer_access noktalı virgülle ayrılmış bayi kodları):",
                    "The first line must be exactly this header (RFC 4180 quoting; retailer_access a ';'-separated list of retailer codes):")) }
                pre { (HEADER) }
                pre { "+905321234567,BIREYSEL,MESAJ,ONAY,HS_FIZIKSEL_ORTAM,2026-12-01 14:05:00,,imzalı form,Kadıköy mağazası,F-1207,pos-7" }
                p { (lang.t("Panelden en çok ", "The panel takes files of up to "))
                    (MAX_UPLOAD >> 20) " MiB"
                    (lang.t("; daha büyük dosyalar sunucuda `iysgate import` ile.", "; larger ones with `iysgate import` on the server.")) }
            }
        } @else {
            p { (lang.t("İçe aktarma için yazma yetkisi gerekir.", "Importing needs a role that writes.")) }
        }
        h2 { (lang.t("Bu süreçteki içe aktarmalar", "Imports in this process")) }
        @if jobs.is_empty() {
            p { (lang.t("Henüz yok.", "None yet.")) }
        } @else {
            div.scroll { table {
                thead { tr {
                    th { (lang.t("Başladı", "Started")) } th { (lang.t("Marka", "Brand")) }
                    th { (lang.t("Dosya", "File")) } th { (lang.t("Kullanıcı", "User")) }
                    th { (lang.t("Durum", "State")) }
                } }
                tbody {
                    @for j in &jobs {
                        tr {
                            td { a href={ "/import/" (j.id) } { (layout::turkey_time(j.started)) } }
                            td { (j.brand) } td { (j.file_name) } td { (j.user) }
                            td { (state_text(lang, j)) }
                        }
                    }
                }
            } }
        }
    };
    Ok(layout::page(
        lang,
        &viewer,
        "/import",
        lang.t("İçe aktar", "Import"),
        &body,
    ))
}

fn bad(e: impl std::fmt::Display) -> PanelError {
    PanelError::BadRequest(format!("upload: {e}"))
}

/// The next field of the form, which must be `name`.
async fn expect_field<'a>(
    multipart: &'a mut Multipart,
    name: &str,
) -> Result<Field<'a>, PanelError> {
    let field = multipart
        .next_field()
        .await
        .map_err(bad)?
        .ok_or_else(|| bad(format!("the form has no field {name:?}")))?;
    if field.name() != Some(name) {
        return Err(bad(format!(
            "expected the field {name:?}, found {:?}",
            field.name().unwrap_or("")
        )));
    }
    Ok(field)
}

/// A private temporary file for an upload (owner-only: it holds personal data).
async fn private_file(path: &std::path::Path) -> std::io::Result<tokio::fs::File> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path).await
}

/// Removes the upload's temporary file when dropped (the import ended, or the upload failed).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn upload(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, PanelError> {
    let mut multipart = multipart.map_err(bad)?;
    // The form token is the first field: nothing is read or written before it is checked.
    let token = expect_field(&mut multipart, "_csrf")
        .await
        .map_err(|_| PanelError::Csrf)?
        .text()
        .await
        .map_err(|_| PanelError::Csrf)?;
    if !crate::panel::auth::csrf_matches(&viewer.session, Some(&token)) {
        return Err(PanelError::Csrf);
    }
    let brand: u32 = expect_field(&mut multipart, "brand")
        .await?
        .text()
        .await
        .map_err(bad)?
        .trim()
        .parse()
        .map_err(|_| bad("brand is not a brand code"))?;
    if !viewer.user.role.writes() || !viewer.user.may_see(brand) {
        return Err(PanelError::Forbidden);
    }
    let id = crate::panel::auth::random_token().map_err(|e| PanelError::Internal(e.to_string()))?;
    let temp = TempFile(std::env::temp_dir().join(format!("iysgate-import-{id}.csv")));
    let mut field = expect_field(&mut multipart, "file").await?;
    let file_name: String = field
        .file_name()
        .unwrap_or("upload.csv")
        .chars()
        .filter(|c| !c.is_control())
        .take(120)
        .collect();
    let mut out = private_file(&temp.0)
        .await
        .map_err(|e| PanelError::Internal(format!("temporary file: {e}")))?;
    let mut size = 0u64;
    while let Some(bytes) = field.chunk().await.map_err(bad)? {
        size += bytes.len() as u64;
        out.write_all(&bytes)
            .await
            .map_err(|e| PanelError::Internal(format!("temporary file: {e}")))?;
    }
    out.flush()
        .await
        .map_err(|e| PanelError::Internal(format!("temporary file: {e}")))?;
    drop(out);
    if size == 0 {
        return Err(bad("the file is empty"));
    }
    let now = panel.now();
    let started = panel.imports.start(Job {
        id: id.clone(),
        brand,
        user: viewer.user.name.clone(),
        file_name: file_name.clone(),
        started: now,
        finished: None,
        progress: ImportProgress {
            total_bytes: size,
            ..ImportProgress::default()
        },
        outcome: Outcome::Running,
    });
    if !started {
        return Err(PanelError::BadRequest(format!(
            "{MAX_RUNNING} imports are running; wait for one to finish"
        )));
    }
    let audited = panel
        .audit(
            &viewer,
            "import.start",
            Some(brand),
            format!("import {} of {file_name:?} ({size} bytes)", &id[..8]),
        )
        .await;
    if let Err(e) = audited {
        // Nothing is imported that the audit log does not show.
        panel.imports.update(&id, |job| {
            job.outcome = Outcome::Failed("the audit log refused the import's start".into());
        });
        return Err(e);
    }
    tokio::spawn(run(State::clone(&panel), viewer, id.clone(), brand, temp));
    Ok(Redirect::to(&format!("/import/{id}")).into_response())
}

/// The import itself, in the background; the summary (or why it stopped) is kept in the job and
/// written to the audit log.
async fn run(panel: State, viewer: Viewer, id: String, brand: u32, temp: TempFile) {
    let recorder = Recorder {
        client: format!("panel:{}", viewer.user.name),
        key_sha256: None,
    };
    let result =
        crate::write::import::import_serving(&panel.recording(), &temp.0, brand, &recorder, |p| {
            panel.imports.update(&id, |job| job.progress = p);
        })
        .await;
    drop(temp);
    let (outcome, detail) = match result {
        Ok(summary) => {
            let detail = format!(
                "import {}: {} rows, {} stored, {} already stored, {} refused",
                &id[..8],
                summary.rows,
                summary.stored,
                summary.already_stored,
                summary.refused.len()
            );
            (Outcome::Done(Arc::new(summary)), detail)
        }
        Err(e) => {
            // The error names the temporary file; the person needs only why.
            let why = match &e {
                crate::write::import::ImportError::Header { .. } => {
                    format!("the first line must be the header {HEADER}")
                }
                other => other.to_string(),
            };
            tracing::error!(error = %e, import = &id[..8], "panel import stopped");
            (
                Outcome::Failed(why.clone()),
                format!("import {} stopped: {why}", &id[..8]),
            )
        }
    };
    let finished = panel.now();
    panel.imports.update(&id, |job| {
        job.finished = Some(finished);
        job.outcome = outcome;
    });
    if let Err(e) = panel
        .audit(&viewer, "import.done", Some(brand), detail)
        .await
    {
        tracing::error!(error = %e, "the audit log refused the end of an import");
    }
}

async fn job_page(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    lang: Lang,
    Path(id): Path<String>,
) -> Result<Markup, PanelError> {
    let job = job_of(&panel, &viewer, &id)?;
    let p = job.progress;
    let body = html! {
        p {
            (lang.t("Dosya", "File")) ": " strong { (job.file_name) } " · "
            (lang.t("marka", "brand")) " " (job.brand) " · "
            (lang.t("başlatan", "started by")) " " (job.user) " · " (layout::turkey_time(job.started))
        }
        @match &job.outcome {
            Outcome::Running => {
                div.progress data-poll={ "/import/" (job.id) "/status" } role="status" aria-live="polite" {
                    label for="import-progress" { (lang.t("İlerleme", "Progress")) }
                    progress id="import-progress" max=(p.total_bytes.max(1)) value=(p.bytes) {}
                    p { span data-rows { (p.rows) } " " (lang.t("satır okundu", "rows read")) }
                    p.quiet { a href={ "/import/" (job.id) } { (lang.t("Yenile", "Refresh")) } }
                }
            }
            Outcome::Failed(why) => {
                (layout::notice(false, &format!("{} {why}", lang.t("İçe aktarma durdu:", "The import stopped:"))))
                p { (lang.t("O ana kadar kaydedilen satırlar kayıtlı kalır; aynı dosyayı yeniden yüklemek yalnızca eksikleri kaydeder.",
                    "Rows stored until then stay stored; uploading the same file again stores only what is missing.")) }
            }
            Outcome::Done(s) => { (summary(lang, &job, s)) }
        }
        p { a href="/import" { (lang.t("Tüm içe aktarmalar", "All imports")) } }
    };
    Ok(layout::page(
        lang,
        &viewer,
        "/import",
        lang.t("İçe aktarma", "Import"),
        &body,
    ))
}

fn summary(lang: Lang, job: &Job, s: &ImportSummary) -> Markup {
    html! {
        (layout::notice(s.refused.is_empty(), &format!("{}: {} {}, {} {}, {} {}, {} {}",
            lang.t("Bitti", "Done"),
            layout::number(s.rows as u64), lang.t("satır", "rows"),
            layout::number(s.stored as u64), lang.t("kaydedildi", "stored"),
            layout::number(s.already_stored as u64), lang.t("önceden kaydedilmişti", "stored before"),
            layout::number(s.refused.len() as u64), lang.t("reddedildi", "refused"))))
        @if !s.refused.is_empty() {
            h2 { (lang.t("Reddedilen satırlar, nedene göre", "Refused rows by reason")) }
            table {
                thead { tr { th { (lang.t("Alan: neden", "Field: reason")) } th.num { (lang.t("Satır", "Rows")) } } }
                tbody { @for (reason, n) in s.refused_by_reason() { tr { td { (reason) } td.num { (n) } } } }
            }
            h2 { (lang.t("Reddedilen satırlar", "Refused rows")) }
            p { a href={ "/import/" (job.id) "/refused.csv" } download { (lang.t("Tümünü CSV olarak indir", "Download all as CSV")) } }
            div.scroll { table {
                thead { tr { th.num { (lang.t("Satır", "Line")) } th { (lang.t("Alan", "Field")) } th { (lang.t("Neden (İYS)", "Reason (İYS)")) } } }
                tbody {
                    @for r in s.refused.iter().take(SHOWN) {
                        tr { td.num { (r.line) } td { code { (r.field) } } td { (r.reason) } }
                    }
                }
            } }
            @if s.refused.len() > SHOWN {
                p { (s.refused.len() - SHOWN) " " (lang.t("satır daha CSV dosyasında.", "more rows in the CSV.")) }
            }
        }
    }
}

async fn status(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PanelError> {
    let job = job_of(&panel, &viewer, &id)?;
    let p = job.progress;
    Ok(axum::Json(serde_json::json!({
        "rows": p.rows,
        "bytes": p.bytes,
        "total_bytes": p.total_bytes,
        "done": !matches!(job.outcome, Outcome::Running),
    }))
    .into_response())
}

async fn refused_csv(
    Extract(panel): Extract<State>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PanelError> {
    let job = job_of(&panel, &viewer, &id)?;
    let Outcome::Done(summary) = &job.outcome else {
        return Err(PanelError::NotFound);
    };
    let mut csv = csv::Writer::from_writer(Vec::new());
    let written: Result<(), csv::Error> = (|| {
        csv.write_record(["line", "field", "reason"])?;
        for r in &summary.refused {
            csv.write_record([r.line.to_string().as_str(), &r.field, &r.reason])?;
        }
        Ok(())
    })();
    let out = written
        .map_err(|e| PanelError::Internal(e.to_string()))
        .and_then(|()| {
            csv.into_inner()
                .map_err(|e| PanelError::Internal(e.to_string()))
        })?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"refused-{}.csv\"", &job.id[..8]),
            ),
        ],
        out,
    )
        .into_response())
}
