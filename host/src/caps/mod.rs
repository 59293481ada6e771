//! Host capabilities lent to guests, one module per WIT import interface.
//!
//! Each module implements its interface's `Host` trait for the per-call
//! [`CallState`](crate::runtime::CallState) and checks every operation
//! against the operator's [`Grants`]; nothing is reachable that the
//! operator did not grant.

pub mod cgroups;
pub mod clock;
pub mod env;
pub mod exec;
pub mod fs;
pub mod http;
pub mod httpsig;
pub mod log;
pub mod process;
pub mod procstats;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::grants::Grants;
use process::ProcessTable;

/// State shared by every call of one guest.
#[derive(Debug)]
pub struct HostContext {
    /// The guest's file name, for logs.
    pub guest: String,
    pub grants: Grants,
    pub processes: Arc<ProcessTable>,
    pub events: broadcast::Sender<TaskEvent>,
    /// Each task's last guest event (message and annotations), so a guest
    /// that reports the state it sees on every poll sends Nomad only the
    /// changes.
    last_events: std::sync::Mutex<std::collections::HashMap<String, LastEvent>>,
}

/// A task event's message and annotations, for spotting repeats.
type LastEvent = (String, BTreeMap<String, String>);

impl HostContext {
    /// `state_dir` holds the supervisors' records; it must survive host
    /// restarts (not the socket directory).
    pub fn new(guest: String, grants: Grants, state_dir: std::path::PathBuf) -> Arc<Self> {
        Self::with_processes(guest, grants, ProcessTable::new(state_dir))
    }

    /// With a process table set up by the caller (tests use it to name the
    /// supervisor binary).
    pub fn with_processes(guest: String, grants: Grants, processes: ProcessTable) -> Arc<Self> {
        let (events, _) = broadcast::channel(1024);
        Arc::new(HostContext {
            guest,
            grants,
            processes: Arc::new(processes),
            events,
            last_events: Default::default(),
        })
    }

    /// Emits a guest's task event unless it repeats the task's previous
    /// one exactly (message and annotations).
    pub fn emit_guest_event(&self, event: TaskEvent) {
        let entry = (event.message.clone(), event.annotations.clone());
        if let Ok(mut last) = self.last_events.lock() {
            if last.get(&event.task_id) == Some(&entry) {
                tracing::debug!(task_id = %event.task_id, "repeated task event not sent again: {}", event.message);
                return;
            }
            last.insert(event.task_id.clone(), entry);
        }
        self.emit(event);
    }

    /// Forgets a destroyed task's last event.
    pub fn forget_task_events(&self, task_id: &str) {
        if let Ok(mut last) = self.last_events.lock() {
            last.remove(task_id);
        }
    }

    /// Publishes a task event to every open `TaskEvents` stream.
    pub fn emit(&self, event: TaskEvent) {
        tracing::info!(task_id = %event.task_id, alloc_id = %event.alloc_id, "task event: {}", event.message);
        // No receiver just means no TaskEvents stream is open yet.
        let _ = self.events.send(event);
    }
}

/// The task a guest call is about.
#[derive(Debug, Clone, Default)]
pub struct TaskContext {
    pub id: String,
    pub name: String,
    pub alloc_id: String,
    /// The task's allocation directory (Nomad's `alloc_dir`): the guest
    /// may use files under it during calls about the task.
    pub alloc_dir: String,
    /// Nomad's stdout FIFO for the task (may be empty outside Nomad).
    pub stdout_path: String,
    pub stderr_path: String,
    /// Processes spawned during the current call.
    pub spawned: Vec<String>,
}

/// A driver task event for Nomad.
#[derive(Debug, Clone)]
pub struct TaskEvent {
    pub task_id: String,
    pub alloc_id: String,
    pub task_name: String,
    pub timestamp: SystemTime,
    pub message: String,
    pub annotations: BTreeMap<String, String>,
}

impl TaskEvent {
    pub fn for_task(task: &TaskContext, message: impl Into<String>) -> Self {
        TaskEvent {
            task_id: task.id.clone(),
            alloc_id: task.alloc_id.clone(),
            task_name: task.name.clone(),
            timestamp: SystemTime::now(),
            message: message.into(),
            annotations: BTreeMap::new(),
        }
    }
}

impl crate::runtime::bindings::nomad::driver::types::Host for crate::runtime::CallState {}
