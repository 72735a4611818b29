//! The system clock: the one place "now" is read from the machine. `domain` only defines the
//! `Clock` trait (so decisions take time as input and tests move it by hand).

use chrono::{DateTime, Utc};

use crate::domain::Clock;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_utc(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
