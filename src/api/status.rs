//! Errors to gRPC status codes.

use crate::check::{CheckError, InvalidField};
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

pub(crate) fn invalid_status(err: &InvalidField) -> Status {
    Status::with_error_details(
        tonic::Code::InvalidArgument,
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
