//! What this process remembers about devices between requests. DDI wants
//! a cancel link for an action the device is working on but the platform
//! withdrew, and an installed base for finished actions; neither is in the
//! staged document, and the campaign manager has no per-action lookup. So
//! this is best effort: lost on restart, and per replica.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use ota_proto::v1::ActionState;

/// Entries kept before a map is dropped whole: bounds memory (about 200
/// bytes an entry) against a fleet larger than expected.
const MAX_ENTRIES: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub action_id: String,
    /// Which attempt of the action (a retry is a new deployment).
    pub attempt: u32,
    /// The id the device knows the attempt by (`ids.rs`).
    pub ddi_id: String,
    pub ecu: String,
    pub name: String,
    pub version: String,
    /// The final state once the device closed it (our report's answer).
    pub finished: Option<ActionState>,
}

#[derive(Default)]
pub struct Memory {
    /// VIN to the last action whose deployment the device fetched.
    actions: Mutex<HashMap<String, Seen>>,
    /// VINs that uploaded their config data since this process started.
    configured: Mutex<HashSet<String>>,
}

impl Memory {
    pub fn saw(&self, vin: &str, seen: Seen) {
        let mut m = self.actions.lock().expect("memory");
        if m.len() >= MAX_ENTRIES && !m.contains_key(vin) {
            m.clear();
        }
        m.insert(vin.to_owned(), seen);
    }

    pub fn get(&self, vin: &str) -> Option<Seen> {
        self.actions.lock().expect("memory").get(vin).cloned()
    }

    pub fn finish(&self, vin: &str, action_id: &str, state: ActionState) {
        if let Some(s) = self.actions.lock().expect("memory").get_mut(vin) {
            if s.action_id == action_id {
                s.finished = Some(state);
            }
        }
    }

    pub fn forget(&self, vin: &str, action_id: &str) -> bool {
        let mut m = self.actions.lock().expect("memory");
        if m.get(vin).is_some_and(|s| s.action_id == action_id) {
            m.remove(vin);
            true
        } else {
            false
        }
    }

    pub fn configured(&self, vin: &str) -> bool {
        self.configured.lock().expect("memory").contains(vin)
    }

    pub fn set_configured(&self, vin: &str) {
        let mut c = self.configured.lock().expect("memory");
        if c.len() >= MAX_ENTRIES {
            c.clear();
        }
        c.insert(vin.to_owned());
    }
}
