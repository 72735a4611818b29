//! Field validation (the 422 layer) of consent bodies and queries, on raw JSON so that every
//! problem maps to its İYS code rather than to a generic parse error.

use chrono::{NaiveDate, NaiveDateTime};
use serde_json::{Map, Value};

use super::codes::{ApiError, at};
use crate::domain::calendar::BusinessCalendar;
use crate::domain::time::parse_iys;
use crate::domain::{Channel, ConsentStatus, RecipientType, Source};
use crate::iys::wire::{CONSENT_FIELDS, IysError};

/// A consent whose fields passed validation. Business rules (H174, H175, …) are not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidConsent {
    /// Normalised: e-mail addresses lower-cased.
    pub recipient: String,
    pub consent_type: Channel,
    pub status: ConsentStatus,
    pub source: Option<&'static str>,
    pub consent_date: Option<NaiveDateTime>,
    pub recipient_type: RecipientType,
    pub retailer_code: Option<u64>,
    pub retailer_access: Option<Vec<u64>>,
}

/// Why a consent body was refused.
#[derive(Debug)]
pub enum Invalid {
    /// A 400 answer that stops validation at once (H267, H085).
    Fatal(ApiError),
    /// 422 entries, in field order.
    Fields(Vec<IysError>),
}

/// 2015-05-01 00:00:00, the earliest consentDate İYS accepts and the only one for HS_2015.
pub fn epoch_2015() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2015, 5, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default()
}

/// İYS e-mail rule: 6–265 characters, ASCII, no spaces, only `+ . _ -` besides letters and
/// digits in the local part, a dotted domain with an alphabetic TLD of 2+ letters.
pub fn is_email(text: &str) -> bool {
    if !(6..=265).contains(&text.len()) || !text.is_ascii() {
        return false;
    }
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()));
    local_ok && domain_ok
}

/// Simple E.164 check: `+`, 10–15 digits, no leading zero; `+90` needs exactly 10 national
/// digits not starting with 0 (so the wrong `+9005…` form is refused).
pub fn is_phone(text: &str) -> bool {
    let Some(digits) = text.strip_prefix('+') else {
        return false;
    };
    if !(10..=15).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return false;
    }
    match digits.strip_prefix("90") {
        Some(national) => national.len() == 10 && !national.starts_with('0'),
        None => true,
    }
}

/// The stored form of a recipient: e-mail addresses lower-case, phones as given.
pub fn normalize(recipient: &str) -> String {
    if recipient.contains('@') {
        recipient.to_ascii_lowercase()
    } else {
        recipient.to_owned()
    }
}

fn h464(consent_type: Channel, value: &Value) -> IysError {
    let mut error = at("H464", "recipient", Some(value));
    error.message = if consent_type.wants_phone() {
        format!(
            "İzin tipi (type) {} için, alıcı (recipient) telefon formatında olmalıdır.",
            consent_type.as_str()
        )
    } else {
        "İzin tipi (type) EPOSTA için, alıcı (recipient) e-posta formatında olmalıdır.".to_owned()
    };
    error
}

/// Format errors of a recipient whose kind is known. `long_code` is H160 (add) or H166
/// (queries) for phones over 15 characters.
fn recipient_format(text: &str, as_phone: bool, long_code: &str, value: &Value) -> Vec<IysError> {
    let mut errors = Vec::new();
    if as_phone {
        if text.chars().count() > 15 {
            errors.push(at(long_code, "recipient", Some(value)));
        }
        if !is_phone(text) {
            errors.push(at("H121", "recipient", Some(value)));
        }
    } else if !is_email(text) {
        errors.push(at("H120", "recipient", Some(value)));
    }
    errors
}

fn is_absent(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

fn parse_consent_date(value: &Value) -> Result<NaiveDateTime, &'static str> {
    let Some(text) = value.as_str() else {
        return Err("H158");
    };
    let shape_ok = text.len() == 19
        && text.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b' ',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        });
    if !shape_ok {
        return Err("H158");
    }
    parse_iys(text).ok_or("H157")
}

/// Validates one consent object (single add or a batch item). `now` is Turkey time.
pub fn consent(
    body: &Value,
    now: NaiveDateTime,
    calendar: &BusinessCalendar,
) -> Result<ValidConsent, Invalid> {
    let Some(obj) = body.as_object() else {
        return Err(Invalid::Fatal(ApiError::code("H085")));
    };
    // 400s first: they stop everything (SPEC lists them as their own answers).
    let retailer_code = match obj.get("retailerCode") {
        None => None,
        Some(Value::Null) => return Err(Invalid::Fatal(ApiError::code("H267"))),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(Invalid::Fatal(ApiError::code("H267")));
        }
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| Invalid::Fatal(ApiError::code("H085")))?,
        ),
    };
    let mut errors = Vec::new();
    let retailer_access = match obj.get("retailerAccess") {
        None => None,
        Some(Value::Null) => {
            errors.push(at("H169", "retailerAccess", None));
            None
        }
        Some(v) => {
            let list = v
                .as_array()
                .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
                .ok_or_else(|| Invalid::Fatal(ApiError::code("H085")))?;
            if list.is_empty() {
                errors.push(at("H163", "retailerAccess", Some(v)));
            } else if list.len() > 100 {
                errors.push(at("H126", "retailerAccess", None));
            }
            Some(list)
        }
    };

    for (key, value) in obj {
        if !CONSENT_FIELDS.contains(&key.as_str()) {
            errors.push(at("H118", key, Some(value)));
        }
    }

    let consent_type = match obj.get("type") {
        v if is_absent(v) => {
            errors.push(at("H111", "type", None));
            None
        }
        Some(v) => {
            let parsed = v.as_str().and_then(Channel::parse);
            if parsed.is_none() {
                errors.push(at("H117", "type", Some(v)));
            }
            parsed
        }
        None => None,
    };

    let recipient = recipient_field(obj, consent_type, &mut errors);

    let status = match obj.get("status") {
        v if is_absent(v) => {
            errors.push(at("H110", "status", None));
            None
        }
        Some(v) => {
            let parsed = v.as_str().and_then(ConsentStatus::parse);
            if parsed.is_none() {
                errors.push(at("H115", "status", Some(v)));
            }
            parsed
        }
        None => None,
    };

    let recipient_type = match obj.get("recipientType") {
        None => Some(RecipientType::Bireysel),
        Some(v) => {
            let parsed = v.as_str().and_then(RecipientType::parse);
            if parsed.is_none() {
                errors.push(at("H116", "recipientType", Some(v)));
            }
            parsed
        }
    };
    // TACIR may omit source and consentDate on its first record (checked against the store).
    let optional_for_tacir = recipient_type == Some(RecipientType::Tacir);

    let source = match obj.get("source") {
        v if is_absent(v) => {
            if !optional_for_tacir {
                errors.push(at("H113", "source", None));
            }
            None
        }
        Some(v) => {
            let found = v.as_str().and_then(Source::provider).map(Source::as_str);
            if found.is_none() {
                errors.push(at("H119", "source", Some(v)));
            }
            found
        }
        None => None,
    };

    let consent_date = match obj.get("consentDate") {
        v if is_absent(v) => {
            if !optional_for_tacir {
                errors.push(at("H112", "consentDate", None));
            }
            None
        }
        Some(v) => match parse_consent_date(v) {
            Err(code) => {
                errors.push(at(code, "consentDate", Some(v)));
                None
            }
            Ok(date) => {
                let before = errors.len();
                if date < epoch_2015() {
                    errors.push(at("H156", "consentDate", Some(v)));
                }
                if source == Some("HS_2015") && date != epoch_2015() {
                    errors.push(at("H155", "consentDate", Some(v)));
                }
                if date > now {
                    errors.push(at("H162", "consentDate", Some(v)));
                }
                // H467: SPEC lists it under both 400 (single add, no location) and 422 (with
                // location ["consentDate"]). The mock answers 422 with the location, on
                // single and batch alike. HS_2015 is exempt: its date is fixed in 2015.
                if errors.len() == before
                    && source != Some("HS_2015")
                    && calendar.registration_deadline(date) < now
                {
                    errors.push(at("H467", "consentDate", Some(v)));
                }
                Some(date)
            }
        },
        None => None,
    };

    if source == Some("HS_KARAR") && status == Some(ConsentStatus::Onay) {
        errors.push(at("H408", "status", obj.get("status")));
    }

    match (recipient, consent_type, status, recipient_type) {
        (Some(recipient), Some(consent_type), Some(status), Some(recipient_type))
            if errors.is_empty() =>
        {
            Ok(ValidConsent {
                recipient,
                consent_type,
                status,
                source,
                consent_date,
                recipient_type,
                retailer_code,
                retailer_access,
            })
        }
        _ => Err(Invalid::Fields(errors)),
    }
}

fn recipient_field(
    obj: &Map<String, Value>,
    consent_type: Option<Channel>,
    errors: &mut Vec<IysError>,
) -> Option<String> {
    let value = match obj.get("recipient") {
        None | Some(Value::Null) => {
            errors.push(at("H114", "recipient", None));
            return None;
        }
        Some(v) => v,
    };
    let Some(text) = value.as_str() else {
        errors.push(at("H122", "recipient", Some(value)));
        return None;
    };
    if text.is_empty() {
        errors.push(at("H114", "recipient", None));
        return None;
    }
    let looks_email = text.contains('@');
    let before = errors.len();
    match consent_type {
        Some(t) if t.wants_phone() == looks_email => errors.push(h464(t, value)),
        Some(t) => errors.extend(recipient_format(text, t.wants_phone(), "H160", value)),
        None => errors.extend(recipient_format(text, !looks_email, "H160", value)),
    }
    (errors.len() == before).then(|| normalize(text))
}

/// Validates the `{recipient, recipientType, type}` body of single status and history.
/// Here a recipient of the wrong kind gives H120/H121 (SPEC examples), not H464.
pub fn query(body: &Value) -> Result<(String, RecipientType, Channel), ApiError> {
    let Some(obj) = body.as_object() else {
        return Err(ApiError::code("H097"));
    };
    let mut errors = Vec::new();
    let consent_type = match obj.get("type") {
        v if is_absent(v) => {
            errors.push(at("H111", "type", None));
            None
        }
        Some(v) => {
            let parsed = v.as_str().and_then(Channel::parse);
            if parsed.is_none() {
                errors.push(at("H117", "type", Some(v)));
            }
            parsed
        }
        None => None,
    };
    let recipient_type = match obj.get("recipientType") {
        v if is_absent(v) => {
            errors.push(at("H170", "recipientType", None));
            None
        }
        Some(v) => {
            let parsed = v.as_str().and_then(RecipientType::parse);
            if parsed.is_none() {
                errors.push(at("H116", "recipientType", Some(v)));
            }
            parsed
        }
        None => None,
    };
    let recipient = match obj.get("recipient") {
        Some(v @ Value::String(text)) if !text.is_empty() => {
            let as_phone = consent_type.map_or(!text.contains('@'), Channel::wants_phone);
            let found = recipient_format(text, as_phone, "H166", v);
            let ok = found.is_empty();
            errors.extend(found);
            ok.then(|| normalize(text))
        }
        _ => {
            errors.push(at("H114", "recipient", None));
            None
        }
    };
    match (recipient, recipient_type, consent_type) {
        (Some(r), Some(rt), Some(t)) if errors.is_empty() => Ok((r, rt, t)),
        _ => Err(ApiError::many(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            errors,
        )),
    }
}

/// Errors of one multi-status recipient against the path `type` (H464 on the wrong kind).
pub fn multi_recipient(text: &str, consent_type: Channel, value: &Value) -> Vec<IysError> {
    if consent_type.wants_phone() == text.contains('@') {
        return vec![h464(consent_type, value)];
    }
    recipient_format(text, consent_type.wants_phone(), "H166", value)
}

/// Adds `index` to each entry (batch validation).
pub fn with_index(errors: Vec<IysError>, index: usize) -> impl Iterator<Item = IysError> {
    errors.into_iter().map(move |mut e| {
        e.index = Some(index as u64);
        e
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones() {
        assert!(is_phone("+905321234567"));
        assert!(!is_phone("+9005321234567"), "the +9005 form is refused");
        assert!(!is_phone("+90532123456"));
        assert!(!is_phone("905321234567"));
        assert!(is_phone("+4915112345678"));
        assert!(!is_phone("+05543213232"));
        assert!(!is_phone("+12345"));
    }

    #[test]
    fn emails() {
        assert!(is_email("a@bb.cc"));
        assert!(is_email("Ali.Veli+etk@Example.COM.tr"));
        assert!(!is_email("örnek@mail.com"));
        assert!(!is_email("ornekmail.com"));
        assert!(!is_email("a b@bb.cc"));
        assert!(!is_email("a@bb"));
        assert!(!is_email("a@b.c"));
        assert!(!is_email(&format!("{}@mail.com", "x".repeat(300))));
    }
}
