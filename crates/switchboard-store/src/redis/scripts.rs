//! The Lua scripts, each the shared prelude (`lua/prelude.lua`) plus its body, run by SHA
//! (EVALSHA; `redis::Script` loads them again after a Redis restart emptied its cache).

use redis::Script;
use redis::aio::ConnectionManager;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/prelude.lua"),
            "\n",
            include_str!(concat!("lua/", $file))
        ))
    };
}

pub struct Scripts {
    pub publish: Script,
    pub lease: Script,
    pub ack: Script,
    pub fail: Script,
    pub extend: Script,
    pub requeue: Script,
    pub create_app: Script,
    pub update_app: Script,
    pub add_key: Script,
    pub revoke_key: Script,
    pub resolve_key: Script,
    pub touch_keys: Script,
    pub query: Script,
    pub stats_by_type: Script,
    pub prune: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            publish: script!("publish.lua"),
            lease: script!("lease.lua"),
            ack: script!("ack.lua"),
            fail: script!("fail.lua"),
            extend: script!("extend.lua"),
            requeue: script!("requeue.lua"),
            create_app: script!("create_app.lua"),
            update_app: script!("update_app.lua"),
            add_key: script!("add_key.lua"),
            revoke_key: script!("revoke_key.lua"),
            resolve_key: script!("resolve_key.lua"),
            touch_keys: script!("touch_keys.lua"),
            query: script!("query.lua"),
            stats_by_type: script!("stats_by_type.lua"),
            prune: script!("prune.lua"),
        }
    }

    /// Loads every script, so a syntax error shows at start rather than on first use.
    pub async fn load(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        for s in [
            &self.publish,
            &self.lease,
            &self.ack,
            &self.fail,
            &self.extend,
            &self.requeue,
            &self.create_app,
            &self.update_app,
            &self.add_key,
            &self.revoke_key,
            &self.resolve_key,
            &self.touch_keys,
            &self.query,
            &self.stats_by_type,
            &self.prune,
        ] {
            s.prepare_invoke().load_async(conn).await?;
        }
        Ok(())
    }
}
