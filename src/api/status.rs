//! Every error the services can meet, to one gRPC status code: the one table of the API
//! (`code_of_*`, table-tested below). The rule: the caller's input is INVALID_ARGUMENT naming
//! the field; the entity a call acts on missing is NOT_FOUND; one the call needs to exist
//! first (a brand to record for or to grant) is FAILED_PRECONDITION; a store or İYS that is
//! out of reach is UNAVAILABLE (retryable); anything that retrying cannot mend (a corrupt
//! store, a bug) is INTERNAL, logged here once with its cause, and the caller gets a safe
//! message. Nothing else in `api/` picks a code for these errors.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::check::{CheckError, InvalidField};
use crate::write::accounts::ServedKeysError;
use crate::write::evidence::EvidenceError;
use crate::write::reconcile::ReconcileError;

pub(crate) fn invalid_status(err: &InvalidField) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        err.to_string(),
        ErrorDetails::with_bad_request_violation(err.field, err.reason.clone()),
    )
}

impl From<CheckError> for Status {
    fn from(err: CheckError) -> Self {
        match err {
            CheckError::Invalid(field) => invalid_status(&field),
            CheckError::Unavailable { .. } => Status::unavailable(err.to_string()),
        }
    }
}

/// The code of an evidence store error.
pub(crate) fn code_of_evidence(e: &EvidenceError) -> Code {
    use EvidenceError as E;
    match e {
        E::Invalid { .. } | E::InvalidField { .. } | E::IdempotencyConflict { .. } => {
            Code::InvalidArgument
        }
        E::AlreadyExists { .. } | E::KeyInUse(_) => Code::AlreadyExists,
        E::UnknownClient(_) => Code::NotFound,
        E::UnknownBrand(_) | E::UnknownProvider(_) => Code::FailedPrecondition,
        E::Database(db) if transient(db) => Code::Unavailable,
        E::Database(_)
        | E::Migrate(_)
        | E::Io { .. }
        | E::Locked(_)
        | E::CorruptLog { .. }
        | E::CorruptRow { .. }
        | E::Broken(_)
        | E::UnknownEvent(_)
        | E::UnknownAttempt { .. }
        | E::Task(_) => Code::Internal,
    }
}

/// A database failure a retry may get past: the connection, the pool, the server's
/// resources, or a serialization conflict (SQLSTATE classes 08, 53, 57 and 40).
fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            ["08", "53", "57", "40"]
                .iter()
                .any(|class| c.starts_with(class))
        }),
        _ => false,
    }
}

/// An evidence store error as the caller sees it; `field` names the request field of a batch
/// item (`consents[3].`) for errors that carry an item index.
pub(crate) fn evidence_status(e: EvidenceError, field: &dyn Fn(usize) -> String) -> Status {
    let code = code_of_evidence(&e);
    match e {
        EvidenceError::Invalid {
            index,
            field: name,
            reason,
        } => bad_request(format!("{}{name}", field(index)), reason.to_owned()),
        EvidenceError::IdempotencyConflict { index, .. } => bad_request(
            format!("{}idempotency_key", field(index)),
            "already used for a different event".into(),
        ),
        EvidenceError::InvalidField { field, reason } => invalid_status(&InvalidField {
            field,
            reason: reason.into(),
        }),
        EvidenceError::UnknownBrand(b) => Status::failed_precondition(format!(
            "brand {b} is not registered (iysgate brand add, or Admin.AddBrand)"
        )),
        other if code == Code::Internal => internal("evidence store", &other),
        other if code == Code::Unavailable => {
            tracing::warn!(error = %other, "evidence store out of reach");
            Status::unavailable("the evidence store is unavailable; nothing was changed; retry")
        }
        other => Status::new(code, other.to_string()),
    }
}

/// An evidence store error of a call that names no batch item.
pub(crate) fn store_status(e: EvidenceError) -> Status {
    evidence_status(e, &|_| String::new())
}

/// The code of a reconciliation error.
pub(crate) fn code_of_reconcile(e: &ReconcileError) -> Code {
    match e {
        ReconcileError::NotOver { .. } | ReconcileError::TooOld { .. } => Code::InvalidArgument,
        ReconcileError::NotReady { .. } | ReconcileError::Iys(_) => Code::Unavailable,
        ReconcileError::Store(inner) => code_of_evidence(inner),
    }
}

pub(crate) fn reconcile_status(e: ReconcileError) -> Status {
    match code_of_reconcile(&e) {
        Code::InvalidArgument => invalid_status(&InvalidField {
            field: "date",
            reason: e.to_string(),
        }),
        _ => match e {
            ReconcileError::Store(inner) => store_status(inner),
            other => Status::unavailable(other.to_string()),
        },
    }
}

/// The served keys could not be rebuilt: a stored client's key is also given by a flag or
/// file (FAILED_PRECONDITION, naming the client), or the store failed.
pub(crate) fn served_keys_status(e: ServedKeysError) -> Status {
    match e {
        ServedKeysError::Keys(keys) => Status::failed_precondition(keys.to_string()),
        ServedKeysError::Evidence(inner) => store_status(inner),
    }
}

fn bad_request(field: String, reason: String) -> Status {
    let message = format!("{field}: {reason}; nothing was stored");
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request_violation(field, reason),
    )
}

/// Logged once, here, with the cause; the caller gets no detail of our insides.
fn internal(what: &str, e: &dyn std::error::Error) -> Status {
    tracing::error!(error = %e, "{what} failed");
    Status::internal(format!(
        "{what} failed; the operators have the details in the log"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn every_evidence_error_has_its_code() {
        use EvidenceError as E;
        let id = crate::write::evidence::EventId(1);
        let cases = [
            (
                E::Invalid {
                    index: 0,
                    field: "f",
                    reason: "r",
                },
                Code::InvalidArgument,
            ),
            (
                E::InvalidField {
                    field: "f",
                    reason: "r",
                },
                Code::InvalidArgument,
            ),
            (
                E::IdempotencyConflict { index: 0, brand: 1 },
                Code::InvalidArgument,
            ),
            (
                E::AlreadyExists {
                    what: "brand",
                    key: "1".into(),
                },
                Code::AlreadyExists,
            ),
            (E::KeyInUse("c".into()), Code::AlreadyExists),
            (E::UnknownClient("c".into()), Code::NotFound),
            (E::UnknownBrand(1), Code::FailedPrecondition),
            (E::UnknownProvider(1), Code::FailedPrecondition),
            (E::Database(sqlx::Error::PoolTimedOut), Code::Unavailable),
            (E::Database(sqlx::Error::RowNotFound), Code::Internal),
            (E::Locked(PathBuf::from("x")), Code::Internal),
            (E::Broken(PathBuf::from("x")), Code::Internal),
            (
                E::CorruptLog {
                    path: PathBuf::from("x"),
                    line: 1,
                    reason: "r".into(),
                },
                Code::Internal,
            ),
            (
                E::CorruptRow {
                    row: "event 1".into(),
                    field: "f",
                    reason: "r".into(),
                },
                Code::Internal,
            ),
            (E::UnknownEvent(id), Code::Internal),
            (E::UnknownAttempt { id, attempt: 1 }, Code::Internal),
            (E::Task("t".into()), Code::Internal),
            (
                E::Io {
                    path: PathBuf::from("x"),
                    source: std::io::Error::other("disk"),
                },
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            let text = error.to_string();
            assert_eq!(code_of_evidence(&error), code, "{text}");
            assert_eq!(
                evidence_status(error, &|i| format!("consents[{i}].")).code(),
                code,
                "{text}"
            );
        }
    }

    #[test]
    fn a_batch_item_error_names_the_request_field() {
        let status = evidence_status(
            EvidenceError::IdempotencyConflict { index: 3, brand: 1 },
            &|i| format!("consents[{i}]."),
        );
        let details = status.get_details_bad_request().unwrap();
        assert_eq!(
            details.field_violations[0].field,
            "consents[3].idempotency_key"
        );
    }

    #[test]
    fn an_internal_failure_tells_the_caller_nothing_of_its_cause() {
        let status = evidence_status(
            EvidenceError::CorruptRow {
                row: "event 12".into(),
                field: "recipient",
                reason: "edited".into(),
            },
            &|_| String::new(),
        );
        assert_eq!(status.code(), Code::Internal);
        assert!(
            !status.message().contains("event 12"),
            "{}",
            status.message()
        );
    }
}
