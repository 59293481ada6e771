//! `nomad:driver/log`: guest logs into the host's hclog stream, and Nomad
//! task events.

use crate::caps::TaskEvent;
use crate::runtime::CallState;
use crate::runtime::bindings::nomad::driver::log::{Host, Level};

/// Longest message kept from a guest; longer ones are cut so one guest cannot
/// flood Nomad's log pipe (Nomad splits lines over 64 KiB anyway).
const MAX_MESSAGE: usize = 8 * 1024;

fn clip(s: &str) -> &str {
    if s.len() <= MAX_MESSAGE {
        return s;
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn render_fields(fields: &[(String, String)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Host for CallState {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        let guest = self.host.guest.as_str();
        let task_id = self.task.as_ref().map(|t| t.id.as_str()).unwrap_or("");
        let message = clip(&message);
        let fields = render_fields(&fields);
        match level {
            Level::Trace => tracing::trace!(target: "guest", guest, task_id, fields, "{message}"),
            Level::Debug => tracing::debug!(target: "guest", guest, task_id, fields, "{message}"),
            Level::Info => tracing::info!(target: "guest", guest, task_id, fields, "{message}"),
            Level::Warn => tracing::warn!(target: "guest", guest, task_id, fields, "{message}"),
            Level::Error => tracing::error!(target: "guest", guest, task_id, fields, "{message}"),
        }
    }

    fn task_event(&mut self, message: String, annotations: Vec<(String, String)>) {
        let message = clip(&message).to_owned();
        match &self.task {
            Some(task) => {
                let mut event = TaskEvent::for_task(task, message);
                event.annotations = annotations.into_iter().collect();
                self.host.emit_guest_event(event);
            }
            None => tracing::info!(
                target: "guest",
                guest = %self.host.guest,
                "task event outside a task call: {message}"
            ),
        }
    }
}
