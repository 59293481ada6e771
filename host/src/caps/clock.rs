//! `nomad:driver/clock`: wall and monotonic time.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::runtime::CallState;
use crate::runtime::bindings::nomad::driver::clock::{Datetime, Host};

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Host for CallState {
    fn now(&mut self) -> Datetime {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Datetime {
            seconds: d.as_secs() as i64,
            nanoseconds: d.subsec_nanos(),
        }
    }

    fn monotonic_ns(&mut self) -> u64 {
        origin().elapsed().as_nanos() as u64
    }
}
