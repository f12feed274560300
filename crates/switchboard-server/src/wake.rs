//! Long-poll wake-ups: one `Notify` per app. Whoever makes deliveries of an app ready
//! (publish, nack, lease expiry) wakes that app's waiting consumers. Only a hint: a woken
//! consumer still asks the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use switchboard_core::AppId;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Wake {
    apps: Mutex<HashMap<AppId, Arc<Notify>>>,
}

impl Wake {
    pub fn of(&self, app: &AppId) -> Arc<Notify> {
        let mut apps = self.apps.lock().expect("wake lock");
        if let Some(n) = apps.get(app) {
            return n.clone();
        }
        let n = Arc::new(Notify::new());
        apps.insert(app.clone(), n.clone());
        n
    }

    pub fn wake<'a>(&self, apps: impl IntoIterator<Item = &'a AppId>) {
        let map = self.apps.lock().expect("wake lock");
        for app in apps {
            if let Some(n) = map.get(app) {
                n.notify_waiters();
            }
        }
    }
}
