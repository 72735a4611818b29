//! The İYS domain: recipients, channels, consent events, the decision rules and the
//! business-day calendar. Pure: no I/O, no clock reads (`clock::SystemClock` is outside),
//! no logging.

pub mod calendar;
pub mod consent;
pub mod decision;
pub mod recipient;
pub mod time;
pub mod types;

pub use calendar::BusinessCalendar;
pub use consent::{Applied, ConsentEvent, ConsentKey, ConsentRecord, Registration};
pub use decision::{BrandPolicy, Decision, Purpose, Reason, RecordStatus, RecordView, Verdict};
pub use recipient::{EmailAddress, PhoneNumber, Recipient, RecipientError};
pub use time::{Clock, ManualClock, TurkeyTime};
pub use types::{AddressKind, Channel, ConsentStatus, RecipientType, Source};
