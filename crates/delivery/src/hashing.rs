//! The maps the Dispatcher and Router touch several times per message, keyed by user and
//! device ids. They use foldhash instead of std's SipHash, which cost 2 % of the server's
//! instructions per delivered message (callgrind, docs/benchmarks.md). foldhash is seeded per
//! process, which with keys that only authenticated sessions insert (their own user and device,
//! bounded by the connection limits) is protection enough against crafted collisions.

pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
