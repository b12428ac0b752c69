//! The Lua scripts, loaded once per store. `redis::Script` sends EVALSHA and falls back to
//! loading the script on NOSCRIPT, so a restarted (or failed-over) Redis needs nothing special.
//!
//! Scripts are the unit of atomicity here: each runs alone on the server. Each declares every
//! key it touches in KEYS.

use ::redis::Script;

/// `inbox_depth(key, cap)`, prepended to the scripts that need it (a script cannot call another).
const DEPTH_FUNCTION: &str = include_str!("lua/depth.lua");

/// `entries_reply(entries)`, prepended to the scripts that return stream entries.
const ENTRIES_FUNCTION: &str = include_str!("lua/entries.lua");

/// `create_group(key, group)` and `read_group(key, group, consumer, count)`, prepended to the
/// scripts that read new entries for a device.
const GROUP_READ_FUNCTIONS: &str = include_str!("lua/group_read.lua");

/// Every script a store runs.
pub(super) struct Scripts {
    pub(super) append: Script,
    pub(super) read: Script,
    pub(super) claim: Script,
    pub(super) depth: Script,
    pub(super) trim: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let with_depth = |body: &str| Script::new(&format!("{DEPTH_FUNCTION}\n{body}"));
        let with_entries = |body: &str| Script::new(&format!("{ENTRIES_FUNCTION}\n{body}"));
        Self {
            append: Script::new(&format!(
                "{DEPTH_FUNCTION}\n{ENTRIES_FUNCTION}\n{GROUP_READ_FUNCTIONS}\n{}",
                include_str!("lua/append.lua")
            )),
            read: Script::new(&format!(
                "{ENTRIES_FUNCTION}\n{GROUP_READ_FUNCTIONS}\n{}",
                include_str!("lua/read.lua")
            )),
            claim: with_entries(include_str!("lua/claim.lua")),
            depth: with_depth(include_str!("lua/inbox_depth.lua")),
            trim: Script::new(include_str!("lua/trim.lua")),
        }
    }
}
