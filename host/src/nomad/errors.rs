//! The one place where host errors become gRPC statuses.
//!
//! Nomad decides whether a failed StartTask is retried by the first detail of
//! the status (`google.rpc.Status` in `grpc-status-details-bin`): a
//! `RecoverableError{recoverable}`. Without it a start failure is fatal for
//! the allocation. UNAVAILABLE and CANCELED are never used for ordinary
//! errors: Nomad reads them as "the plugin is shutting down".

use prost::Message;
use tonic::{Code, Status};

use crate::driver::{DriverError, Refusal};
use crate::runtime::GuestFailure;

/// `google.rpc.Status`, declared here to encode the status details.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

const RECOVERABLE_TYPE_URL: &str =
    "type.googleapis.com/hashicorp.nomad.plugins.shared.structs.RecoverableError";

/// A status carrying Nomad's RecoverableError detail.
pub fn with_recoverable(code: Code, message: String, recoverable: bool) -> Status {
    let detail = prost_types::Any {
        type_url: RECOVERABLE_TYPE_URL.into(),
        value: nomad_plugin_proto::structs::RecoverableError { recoverable }.encode_to_vec(),
    };
    let status = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![detail],
    };
    Status::with_details(code, message, status.encode_to_vec().into())
}

/// Maps a driver error to the status Nomad should see.
pub fn to_status(e: DriverError) -> Status {
    let message = e.to_string();
    match &e {
        DriverError::TaskNotFound(_) => Status::not_found(message),
        DriverError::NotGranted(_) => Status::permission_denied(message),
        DriverError::TaskExists(_) => Status::already_exists(message),
        DriverError::InvalidRequest(_) => Status::invalid_argument(message),
        DriverError::Host(_) => with_recoverable(Code::Internal, message, true),
        DriverError::Guest(g) => {
            let recoverable = matches!(g.kind, GuestFailure::Timeout(_));
            with_recoverable(Code::Internal, message, recoverable)
        }
        DriverError::Refused { refusal, .. } => match refusal {
            Refusal::InvalidConfig(_) => with_recoverable(Code::InvalidArgument, message, false),
            Refusal::Temporary(_) => with_recoverable(Code::FailedPrecondition, message, true),
            Refusal::Fatal(_) => with_recoverable(Code::FailedPrecondition, message, false),
            Refusal::Unsupported(_) => Status::unimplemented(message),
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn detail(status: &Status) -> (i32, bool) {
        let s = RpcStatus::decode(status.details()).unwrap();
        assert_eq!(s.details[0].type_url, RECOVERABLE_TYPE_URL);
        let r =
            nomad_plugin_proto::structs::RecoverableError::decode(&*s.details[0].value).unwrap();
        (s.code, r.recoverable)
    }

    #[test]
    fn temporary_refusals_are_recoverable_and_config_errors_are_not() {
        let temp = to_status(DriverError::Refused {
            guest: "g".into(),
            call: "start-task",
            refusal: Refusal::Temporary("busy".into()),
        });
        assert_eq!(temp.code(), Code::FailedPrecondition);
        assert_eq!(detail(&temp), (Code::FailedPrecondition as i32, true));

        let bad = to_status(DriverError::Refused {
            guest: "g".into(),
            call: "start-task",
            refusal: Refusal::InvalidConfig("field \"greeting\": expected a string".into()),
        });
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().contains("greeting"));
        assert!(!detail(&bad).1);
    }

    #[test]
    fn unknown_task_is_not_found_never_unavailable() {
        let s = to_status(DriverError::TaskNotFound("a/b/c".into()));
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains("a/b/c"));
    }
}
