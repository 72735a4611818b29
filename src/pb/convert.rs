//! Protobuf fields to domain values and back, for every service and the write path alike.
//! A refusal names the field (`InvalidField`); a code wider than 32 bits is refused, never
//! truncated ([`narrow_code`]).

use crate::check::{InvalidField, Query};
use crate::domain::time::format_iys;
use crate::domain::{
    self, Channel as DChannel, Decision as DDecision, Purpose as DPurpose, Reason as DReason,
    RecipientType as DRecipientType, RecordStatus, Verdict as DVerdict,
};
use crate::pb;

pub fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidField {
    InvalidField {
        field,
        reason: reason.into(),
    }
}

/// An İYS code (brandCode, retailerCode, iysCode) as it arrives: the proto carries codes as
/// uint64 so that a value wider than 32 bits arrives whole and is refused here, never
/// truncated into another brand. The one place a wire code becomes a `u32`.
///
/// # Errors
/// [`CodeTooLarge`], for the caller to name its field with.
pub fn narrow_code(value: u64) -> Result<u32, CodeTooLarge> {
    u32::try_from(value).map_err(|_| CodeTooLarge(value))
}

/// A wire code wider than an İYS code (32 bits); the message is the reason without the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is above {max}, the largest İYS code", max = u32::MAX)]
pub struct CodeTooLarge(pub u64);

/// [`narrow_code`] for a top-level field.
pub fn code_field(field: &'static str, value: u64) -> Result<u32, InvalidField> {
    narrow_code(value).map_err(|reason| invalid(field, reason.to_string()))
}

pub fn brand(code: u64) -> Result<u32, InvalidField> {
    match code_field("brand_code", code)? {
        0 => Err(invalid("brand_code", "required (the İYS brandCode)")),
        code => Ok(code),
    }
}

pub fn channel(value: i32) -> Result<DChannel, InvalidField> {
    match pb::Channel::try_from(value) {
        Ok(pb::Channel::Arama) => Ok(DChannel::Arama),
        Ok(pb::Channel::Mesaj) => Ok(DChannel::Mesaj),
        Ok(pb::Channel::Eposta) => Ok(DChannel::Eposta),
        Ok(pb::Channel::Unspecified) => Err(invalid("channel", "required: ARAMA, MESAJ or EPOSTA")),
        Err(_) => Err(invalid("channel", format!("unknown value {value}"))),
    }
}

pub fn recipient_type(value: i32) -> Result<DRecipientType, InvalidField> {
    match pb::RecipientType::try_from(value) {
        Ok(pb::RecipientType::Unspecified | pb::RecipientType::Bireysel) => {
            Ok(DRecipientType::Bireysel)
        }
        Ok(pb::RecipientType::Tacir) => Ok(DRecipientType::Tacir),
        Err(_) => Err(invalid("recipient_type", format!("unknown value {value}"))),
    }
}

pub fn purpose(value: i32) -> Result<DPurpose, InvalidField> {
    Ok(match pb::Purpose::try_from(value) {
        Ok(pb::Purpose::Commercial) => DPurpose::Commercial,
        Ok(pb::Purpose::Transactional) => DPurpose::Transactional,
        Ok(pb::Purpose::Information) => DPurpose::Information,
        Ok(pb::Purpose::DebtReminder) => DPurpose::DebtReminder,
        Ok(pb::Purpose::DeliveryNotice) => DPurpose::DeliveryNotice,
        Ok(pb::Purpose::DataUpdate) => DPurpose::DataUpdate,
        Ok(pb::Purpose::LegalNotice) => DPurpose::LegalNotice,
        Err(_) => return Err(invalid("purpose", format!("unknown value {value}"))),
    })
}

/// A check from the wire fields (channel, recipient_type, retailer_code, purpose) shared by
/// `CheckRequest` and `CheckBatchItem`, naming the first bad field.
pub fn query(
    brand: u32,
    recipient: &str,
    fields: (i32, i32, u64, i32),
) -> Result<Query<'_>, InvalidField> {
    let (channel_value, rtype, retailer_code, purpose_value) = fields;
    Ok(Query {
        brand,
        recipient,
        channel: channel(channel_value)?,
        recipient_type: recipient_type(rtype)?,
        retailer: retailer(retailer_code)?,
        purpose: purpose(purpose_value)?,
    })
}

/// A retailer_code: 0 is none.
pub fn retailer(code: u64) -> Result<Option<u32>, InvalidField> {
    Ok(Some(code_field("retailer_code", code)?).filter(|&c| c != 0))
}

pub fn reason_pb(reason: DReason) -> pb::Reason {
    match reason {
        DReason::ConsentRegistered => pb::Reason::ConsentRegistered,
        DReason::ExemptPurpose => pb::Reason::ExemptPurpose,
        DReason::TacirOptOutPolicy => pb::Reason::TacirOptOutPolicy,
        DReason::LocalRet => pb::Reason::LocalRet,
        DReason::Rejected => pb::Reason::Rejected,
        DReason::PendingRegistration => pb::Reason::PendingRegistration,
        DReason::RegistrationExpired => pb::Reason::RegistrationExpired,
        DReason::NoConsent => pb::Reason::NoConsent,
        DReason::RetailerNotGranted => pb::Reason::RetailerNotGranted,
    }
}

pub fn source_pb(source: Option<domain::Source>) -> i32 {
    // The proto's Source numbers are the domain's compact codes by construction.
    source.map_or(0, |s| i32::from(s.code()))
}

pub fn decision_pb(d: &DDecision, age_ms: u64) -> pb::Decision {
    let verdict = match d.verdict {
        DVerdict::Allow => pb::Verdict::Allow,
        DVerdict::AllowExempt => pb::Verdict::AllowExempt,
        DVerdict::Deny => pb::Verdict::Deny,
    };
    let (status, pending) = match d.record.map(|r| r.status) {
        None => (pb::ConsentStatus::Unspecified, false),
        Some(RecordStatus::Onay) => (pb::ConsentStatus::Onay, false),
        Some(RecordStatus::OnayPending) => (pb::ConsentStatus::Onay, true),
        Some(RecordStatus::Ret) => (pb::ConsentStatus::Ret, false),
        Some(RecordStatus::RetPending) => (pb::ConsentStatus::Ret, true),
    };
    pb::Decision {
        verdict: verdict.into(),
        reason: reason_pb(d.reason).into(),
        status: status.into(),
        source: d.record.map_or(0, |r| source_pb(r.source)),
        consent_date: d
            .record
            .map(|r| crate::domain::time::format_minute(r.consent_date))
            .unwrap_or_default(),
        pending_registration: pending,
        registration_deadline: d.registration_deadline.map(format_iys).unwrap_or_default(),
        data_age_ms: age_ms,
        error: String::new(),
    }
}

pub fn invalid_decision(err: &InvalidField) -> pb::Decision {
    pb::Decision {
        verdict: pb::Verdict::Invalid.into(),
        reason: pb::Reason::InvalidRecipient.into(),
        error: err.to_string(),
        ..pb::Decision::default()
    }
}

pub fn pb_channel(c: DChannel) -> pb::Channel {
    match c {
        DChannel::Arama => pb::Channel::Arama,
        DChannel::Mesaj => pb::Channel::Mesaj,
        DChannel::Eposta => pb::Channel::Eposta,
    }
}

pub fn pb_purpose(p: DPurpose) -> pb::Purpose {
    match p {
        DPurpose::Commercial => pb::Purpose::Commercial,
        DPurpose::Transactional => pb::Purpose::Transactional,
        DPurpose::Information => pb::Purpose::Information,
        DPurpose::DebtReminder => pb::Purpose::DebtReminder,
        DPurpose::DeliveryNotice => pb::Purpose::DeliveryNotice,
        DPurpose::DataUpdate => pb::Purpose::DataUpdate,
        DPurpose::LegalNotice => pb::Purpose::LegalNotice,
    }
}

pub fn pb_rtype(t: DRecipientType) -> pb::RecipientType {
    match t {
        DRecipientType::Bireysel => pb::RecipientType::Bireysel,
        DRecipientType::Tacir => pb::RecipientType::Tacir,
    }
}
