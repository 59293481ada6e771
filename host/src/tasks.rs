//! The task table: every task this host process knows, its handle data and
//! its exit result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::runtime::bindings::nomad::driver::types::NetworkOverride;

/// How a task ended, as reported to Nomad.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskResult {
    pub exit_code: i32,
    pub signal: i32,
    pub oom_killed: bool,
    /// A driver error text; Nomad treats the exit as failed with it.
    pub err: Option<String>,
}

/// One task.
#[derive(Debug)]
pub struct Task {
    pub id: String,
    pub name: String,
    pub alloc_id: String,
    /// Opaque bytes the guest returned at start.
    pub guest_state: Vec<u8>,
    /// Host id of the process whose exit ends the task.
    pub main_process: Option<String>,
    pub started_at: SystemTime,
    /// The sha256 of the guest build that started the task; calls about
    /// the task go to that build while this process has it.
    pub guest_sha256: String,
    /// Whatever the adapter needs to echo back in the task handle.
    pub handle_config: nomad_plugin_proto::drivers::TaskConfig,
    /// The guest follows this task with `poll-task` (it has no main
    /// process): a stop then waits for the guest to see the task end.
    pub followed: std::sync::atomic::AtomicBool,
    /// Wakes the loop that follows the task for a poll at once (a stop
    /// just asked the guest to end it).
    pub poll_now: tokio::sync::Notify,
    /// Nomad stopped the task with `DETACH` (a remote task handed to a
    /// replacement allocation): this process stops managing it, and its
    /// destroy leaves the remote instance alone.
    pub detached: std::sync::atomic::AtomicBool,
    /// The task's addressing as the guest last gave it: what `start-task`
    /// returned, replaced by each poll that carries one. InspectTask
    /// reports it.
    network_override: Mutex<Option<NetworkOverride>>,
    exit: watch::Sender<Option<(TaskResult, SystemTime)>>,
}

impl Task {
    pub fn new(
        id: String,
        name: String,
        alloc_id: String,
        guest_state: Vec<u8>,
        main_process: Option<String>,
        handle_config: nomad_plugin_proto::drivers::TaskConfig,
    ) -> Self {
        Task {
            id,
            name,
            alloc_id,
            guest_state,
            main_process,
            started_at: SystemTime::now(),
            guest_sha256: String::new(),
            handle_config,
            followed: std::sync::atomic::AtomicBool::new(false),
            poll_now: tokio::sync::Notify::new(),
            detached: std::sync::atomic::AtomicBool::new(false),
            network_override: Mutex::new(None),
            exit: watch::channel(None).0,
        }
    }

    /// The task's latest network override, if the guest gave one.
    pub fn network_override(&self) -> Option<NetworkOverride> {
        match self.network_override.lock() {
            Ok(n) => n.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the task's network override.
    pub fn set_network_override(&self, n: NetworkOverride) {
        match self.network_override.lock() {
            Ok(mut slot) => *slot = Some(n),
            Err(poisoned) => *poisoned.into_inner() = Some(n),
        }
    }

    /// The result and completion time, once the task has exited.
    pub fn exit(&self) -> Option<(TaskResult, SystemTime)> {
        self.exit.borrow().clone()
    }

    /// Records the exit; the first record wins.
    pub fn set_exit(&self, result: TaskResult) {
        self.exit.send_if_modified(|slot| {
            if slot.is_none() {
                *slot = Some((result, SystemTime::now()));
                true
            } else {
                false
            }
        });
    }

    /// Waits until the task has exited.
    pub async fn wait(&self) -> TaskResult {
        let mut rx = self.exit.subscribe();
        let r = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().map(|(r, _)| r),
            Err(_) => None,
        };
        r.unwrap_or_else(|| TaskResult {
            exit_code: -1,
            err: Some("the host stopped tracking the task".into()),
            ..TaskResult::default()
        })
    }

    /// The guest build that started the task.
    pub fn with_guest_sha256(mut self, sha256: String) -> Self {
        self.guest_sha256 = sha256;
        self
    }

    /// The start time recorded in a handle (for a recovered task).
    pub fn with_started_at(mut self, unix_ns: u64) -> Self {
        self.started_at = UNIX_EPOCH + std::time::Duration::from_nanos(unix_ns);
        self
    }

    /// The driver state the host stores in Nomad's task handle.
    pub fn handle_state(
        &self,
        guest: &str,
        guest_sha256: &str,
        processes: Vec<String>,
        main_pid: Option<u32>,
    ) -> HandleState {
        HandleState {
            version: HANDLE_VERSION,
            guest: guest.to_owned(),
            guest_sha256: guest_sha256.to_owned(),
            guest_state: self.guest_state.clone(),
            main_process: self.main_process.clone(),
            processes,
            main_pid,
            started_at_unix_ns: self
                .started_at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        }
    }
}

/// Version of [`HandleState`]; also `TaskHandle.version`.
pub const HANDLE_VERSION: i32 = 1;

/// What the host keeps in `TaskHandle.driver_state` (JSON), so a later host
/// process knows which guest started the task and with what state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandleState {
    pub version: i32,
    pub guest: String,
    pub guest_sha256: String,
    pub guest_state: Vec<u8>,
    pub main_process: Option<String>,
    /// Every supervised process of the task (record names in the state
    /// dir), the main one included.
    #[serde(default)]
    pub processes: Vec<String>,
    pub main_pid: Option<u32>,
    pub started_at_unix_ns: u64,
}

impl HandleState {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes)
            .map_err(|e| format!("driver_state is not a handle this host wrote: {e}"))
    }
}

/// Every task of this host process, by Nomad task id.
#[derive(Debug, Default)]
pub struct TaskTable {
    tasks: Mutex<HashMap<String, Arc<Task>>>,
}

impl TaskTable {
    pub fn get(&self, id: &str) -> Option<Arc<Task>> {
        self.tasks.lock().ok()?.get(id).cloned()
    }

    /// Inserts a new task; false if the id is taken.
    pub fn insert(&self, task: Arc<Task>) -> bool {
        let Ok(mut m) = self.tasks.lock() else {
            return false;
        };
        if m.contains_key(&task.id) {
            return false;
        }
        m.insert(task.id.clone(), task);
        true
    }

    pub fn contains(&self, id: &str) -> bool {
        self.tasks.lock().is_ok_and(|m| m.contains_key(id))
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Task>> {
        self.tasks.lock().ok()?.remove(id)
    }

    pub fn len(&self) -> usize {
        self.tasks.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn task(id: &str) -> Arc<Task> {
        Arc::new(Task::new(
            id.into(),
            "t".into(),
            "a".into(),
            vec![1],
            None,
            Default::default(),
        ))
    }

    #[tokio::test]
    async fn first_exit_wins_and_wakes_waiters() {
        let t = task("x");
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move { t.wait().await })
        };
        t.set_exit(TaskResult {
            exit_code: 3,
            ..Default::default()
        });
        t.set_exit(TaskResult {
            exit_code: 9,
            ..Default::default()
        });
        assert_eq!(waiter.await.unwrap().exit_code, 3);
        assert_eq!(t.exit().unwrap().0.exit_code, 3);
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let table = TaskTable::default();
        assert!(table.insert(task("x")));
        assert!(!table.insert(task("x")));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn handle_state_round_trips() {
        let t = task("x");
        let s = t.handle_state("hello.wasm", "abc", vec!["p-1".into()], Some(42));
        assert_eq!(HandleState::decode(&s.encode()).unwrap(), s);
        assert!(HandleState::decode(b"\x00garbage").is_err());
    }
}
