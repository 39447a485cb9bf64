//! Redis key names under the prefix (the layout is in the module docs of `store`), and which
//! shard a key belongs to.
//!
//! Outside a cluster there is one shard and the names are `P:tasks`, `P:k:{key}`, ... In cluster
//! mode every shard's names start with its hash tag `{P:n:salt}`, so each shard (its data keys,
//! task stream, index and bookkeeping) lives in one hash slot and every script runs on one node.
//! The salt puts shard n's slot in the n-th equal part of the slot space: a cluster whose slots
//! are split evenly between its masters holds an equal share of the shards on each.

/// Slots of a Redis Cluster.
pub const SLOTS: u32 = 16384;

/// Buckets of a capped map (the `BUCKETS` of `capped.lua`).
pub const BUCKETS: usize = 16;

/// The keys of one capped map (`capped.lua`): its state hash, then its buckets. Scripts get
/// all of them as keys, so every key a script touches is declared.
#[derive(Debug, Clone)]
pub struct CappedMap {
    pub keys: Vec<String>,
}

impl CappedMap {
    fn new(base: &str) -> Self {
        let mut keys = vec![format!("{base}n")];
        keys.extend((0..BUCKETS).map(|n| format!("{base}{n}")));
        Self { keys }
    }
}

/// Redis key names of one shard, derived once from the prefix.
#[derive(Debug, Clone)]
pub struct KeySpace {
    /// The shard's number.
    pub shard: usize,
    /// Its slot in a Redis Cluster.
    pub slot: u16,
    /// What every key of the shard starts with: the prefix, or the shard's hash tag.
    pub base: String,
    pub stream: String,
    pub dead_letter: String,
    pub index: String,
    pub version: String,
    /// `P:tombs`: data keys that hold a tombstone or an expiring value, by the time of their
    /// delete or expiry.
    pub tombstones: String,
    /// Task outcomes by stream id (`P:o:n`, `P:o:0` ...).
    pub outcomes: CappedMap,
    /// Idempotency-Key -> task (`P:i:n`, `P:i:0` ...).
    pub idempotency: CappedMap,
    /// Cluster mode: Idempotency-Keys that map to this shard -> the shard and fingerprint of
    /// the request that used them first (`B:c:n`, `B:c:0` ...).
    pub claims: CappedMap,
    /// `P:att`: attempts of tasks that failed at least once and are not finished, by stream id.
    pub attempts: String,
    /// Written by the readiness check: proves the shard's master takes writes.
    pub ready: String,
    /// Incremented before `WAIT`, so the wait covers every write the master answered before.
    pub ack: String,
}

impl KeySpace {
    fn new(shard: usize, base: String) -> Self {
        let tag = base.trim_start_matches('{').trim_end_matches('}');
        Self {
            shard,
            slot: slot_of(tag) as u16,
            stream: format!("{base}:tasks"),
            dead_letter: format!("{base}:dlq"),
            index: format!("{base}:idx"),
            version: format!("{base}:ver"),
            tombstones: format!("{base}:tombs"),
            outcomes: CappedMap::new(&format!("{base}:o:")),
            idempotency: CappedMap::new(&format!("{base}:i:")),
            claims: CappedMap::new(&format!("{base}:c:")),
            attempts: format!("{base}:att"),
            ready: format!("{base}:ready"),
            ack: format!("{base}:ack"),
            base,
        }
    }

    pub fn data(&self, key: &str) -> String {
        format!("{}:k:{key}", self.base)
    }
}

/// Every shard's key names, and the channel workers announce finished tasks on.
#[derive(Debug, Clone)]
pub struct Shards {
    pub prefix: String,
    pub done_channel: String,
    /// Records the shard count in cluster mode (`{P:layout}`, a name that does not depend on the
    /// count), so that a process with another count is refused instead of using other shards.
    pub layout: Option<String>,
    shards: Vec<KeySpace>,
}

impl Shards {
    /// One shard with the plain names (standalone and sentinel mode).
    pub fn single(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            done_channel: format!("{prefix}:done"),
            layout: None,
            shards: vec![KeySpace::new(0, prefix.to_string())],
        }
    }

    /// `n` hash-tagged shards (cluster mode).
    pub fn cluster(prefix: &str, n: usize) -> Self {
        let shards: Vec<KeySpace> = (0..n).map(|i| KeySpace::new(i, shard_tag(prefix, i, n))).collect();
        Self {
            prefix: prefix.to_string(),
            done_channel: format!("{prefix}:done"),
            // Tagged by the prefix alone: the same key whatever the shard count.
            layout: Some(format!("{{{prefix}:layout}}")),
            shards,
        }
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    pub fn all(&self) -> &[KeySpace] {
        &self.shards
    }

    /// Shard `n`; None for a number no shard has (a forged task id).
    pub fn get(&self, n: usize) -> Option<&KeySpace> {
        self.shards.get(n)
    }

    /// The shard that holds `key` and queues its writes: the same shard for every write of a
    /// key, which is what keeps a key's writes in acceptance order.
    pub fn of(&self, key: &str) -> &KeySpace {
        &self.shards[shard_of(key, self.shards.len())]
    }
}

/// The shard of `key` among `n`: from the high bits of its CRC-16 (the low bits of CRC-16 spread
/// keys that differ only in their last characters unevenly over a few shards).
pub fn shard_of(key: &str, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    ((u64::from(crc16(key.as_bytes())) * n as u64) >> 16) as usize
}

/// Shard `i`'s hash tag: `{P:i:salt}` with the smallest salt that puts it in the `i`-th of `n`
/// equal parts of the slot space.
fn shard_tag(prefix: &str, i: usize, n: usize) -> String {
    let (lo, hi) = (slot_bound(i, n), slot_bound(i + 1, n));
    (0u64..)
        .map(|salt| format!("{prefix}:{i}:{salt}"))
        .find(|tag| (lo..hi.max(lo + 1)).contains(&slot_of(tag)))
        .map(|tag| format!("{{{tag}}}"))
        .expect("crc16 reaches every slot")
}

fn slot_bound(i: usize, n: usize) -> u32 {
    (i as u64 * u64::from(SLOTS) / n as u64) as u32
}

/// The Redis Cluster slot of a hash tag's content (or of a key without one).
pub fn slot_of(tag: &str) -> u32 {
    u32::from(crc16(tag.as_bytes())) % SLOTS
}

/// CRC-16/XMODEM, the checksum Redis Cluster hashes keys with.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_is_the_one_redis_cluster_uses() {
        // CLUSTER KEYSLOT of these keys, from the Redis Cluster specification and redis-cli.
        assert_eq!(slot_of("123456789"), 0x31C3 % SLOTS);
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("bar"), 5061);
    }

    #[test]
    fn each_shard_lies_in_its_own_part_of_the_slot_space() {
        for n in [1, 3, 16, 1024] {
            let shards = Shards::cluster("kvq", n);
            for s in shards.all() {
                let tag = s.base.trim_start_matches('{').trim_end_matches('}');
                let slot = slot_of(tag);
                assert!(
                    (slot_bound(s.shard, n)..slot_bound(s.shard + 1, n).max(slot_bound(s.shard, n) + 1))
                        .contains(&slot),
                    "{n} shards: shard {} at slot {slot}",
                    s.shard
                );
                assert!(s.data("a{b}c").starts_with(&s.base), "the tag comes first, so a key's braces do not count");
            }
        }
    }

    #[test]
    fn keys_spread_over_the_shards() {
        for pattern in ["user:", "k", "bench-"] {
            let mut counts = [0u32; 16];
            for i in 0..2_000 {
                counts[shard_of(&format!("{pattern}{i}"), 16)] += 1;
            }
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(f64::from(*min) / f64::from(*max) > 0.85, "{pattern}: {counts:?}");
        }
        assert_eq!(shard_of("anything", 1), 0);
        assert!((0..1000).all(|i| shard_of(&format!("{i}"), 3) < 3));
    }

    #[test]
    fn one_shard_keeps_the_names_kvq_always_used() {
        let s = Shards::single("kvq");
        let k = &s.all()[0];
        assert_eq!(
            (k.stream.as_str(), k.data("a").as_str(), s.done_channel.as_str()),
            ("kvq:tasks", "kvq:k:a", "kvq:done")
        );
        assert_eq!(k.outcomes.keys[0], "kvq:o:n");
        assert_eq!(k.outcomes.keys[1], "kvq:o:0");
        assert_eq!(k.outcomes.keys.len(), 1 + BUCKETS);
    }
}
