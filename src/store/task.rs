//! The stream entry wire format: one write task's fields, how they are encoded and decoded, and
//! the fingerprint that tells an idempotent retry from a different request.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::domain::{Key, Op, WriteRequest, MAX_TTL_SECONDS};

/// Longest TTL a stream entry may carry, in ms: the API's ten years.
pub const MAX_TTL_MS: u64 = MAX_TTL_SECONDS * 1000;

/// The stream entry's field names: the wire format shared by `StreamTask::fields` (encode),
/// `StreamTask::decode`, the scripts that copy entries (`enqueue.lua`, `replay.lua`,
/// `dead_letter.lua`) and `apply.lua`, which receives each task's fields as name/value pairs and
/// reads them by these names.
pub mod field {
    /// The task id, 32 hex digits: only in entries written before task ids were derived from
    /// stream ids (`task_id_of`); such entries still decode.
    pub const TASK_ID: &str = "t";
    pub const OP: &str = "op";
    pub const KEY: &str = "k";
    pub const VALUE: &str = "v";
    pub const TTL_MS: &str = "ttl";
    pub const IF_MATCH: &str = "if";
    pub const IF_NONE_MATCH: &str = "inm";
    pub const NOTIFY: &str = "w";
}

/// Every field of a stream entry with its meaning: adding a write option adds a row here.
pub const FIELDS: [(&str, &str); 7] = [
    (field::OP, "operation: set or delete"),
    (field::KEY, "the key"),
    (field::VALUE, "the value (sets only)"),
    (field::TTL_MS, "TTL in ms, 1 to MAX_TTL_MS (sets only, optional)"),
    (field::IF_MATCH, "If-Match: the version the key must be at (optional)"),
    (field::IF_NONE_MATCH, "If-None-Match: 1 when the key must not exist (optional)"),
    (field::NOTIFY, "1 when a client waits for the outcome (optional)"),
];

/// A task as read from the stream by a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTask {
    /// The shard whose stream holds it (always 0 outside a cluster).
    pub shard: usize,
    pub stream_id: String,
    pub task_id: String,
    pub op: Op,
    pub key: String,
    /// The value to set (empty for a delete).
    pub value: String,
    pub ttl_ms: Option<u64>,
    pub if_match: Option<u64>,
    pub if_none_match: bool,
    pub notify: bool,
}

impl StreamTask {
    /// The stream entry's fields (see `FIELDS`), as enqueue writes them and apply reads them; the
    /// stream id is not one of them, and neither is the task id (it is the stream id).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![(field::OP, self.op.as_str().to_string()), (field::KEY, self.key.clone())];
        if self.op == Op::Set {
            f.push((field::VALUE, self.value.clone()));
            if let Some(ttl) = self.ttl_ms {
                f.push((field::TTL_MS, ttl.to_string()));
            }
        }
        if let Some(v) = self.if_match {
            f.push((field::IF_MATCH, v.to_string()));
        }
        if self.if_none_match {
            f.push((field::IF_NONE_MATCH, "1".to_string()));
        }
        if self.notify {
            f.push((field::NOTIFY, "1".to_string()));
        }
        f
    }

    /// Appends the entry's fields to `cmd` as name, value pairs, as `XADD` and the scripts that
    /// add entries take them.
    pub(super) fn push_fields(&self, cmd: &mut redis::Cmd) {
        for (name, value) in self.fields() {
            cmd.arg(name).arg(value);
        }
    }

    /// Decodes a stream entry's fields, saying what is wrong with an entry that is no valid
    /// task. Fields it does not know are ignored.
    pub fn decode(stream_id: &str, shard: usize, fields: &HashMap<String, redis::Value>) -> Result<StreamTask, String> {
        let text = |name: &str| -> Result<Option<String>, String> {
            match fields.get(name) {
                None => Ok(None),
                Some(redis::Value::BulkString(b)) => {
                    String::from_utf8(b.clone()).map(Some).map_err(|_| format!("field {name} is not UTF-8"))
                }
                Some(redis::Value::SimpleString(s)) => Ok(Some(s.clone())),
                Some(redis::Value::Int(i)) => Ok(Some(i.to_string())),
                Some(_) => Err(format!("field {name} is not a string")),
            }
        };
        let required = |name: &str, what: &str| -> Result<String, String> {
            text(name)?.ok_or_else(|| format!("field {name} ({what}) is missing"))
        };
        let task_id = match text(field::TASK_ID)? {
            // an entry from before task ids were stream ids
            Some(t) if t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()) => t,
            Some(t) => {
                return Err(format!("field {}: {} is not a task id (32 hex digits)", field::TASK_ID, shorten(&t)))
            }
            None => {
                task_id_of(stream_id, shard).ok_or_else(|| format!("stream id {} is malformed", shorten(stream_id)))?
            }
        };
        let op_text = required(field::OP, "operation")?;
        let op = Op::parse(&op_text)
            .ok_or_else(|| format!("field {}: unknown operation {} (set or delete)", field::OP, shorten(&op_text)))?;
        let key = required(field::KEY, "key")?;
        Key::parse(&key).map_err(|e| format!("field {}: {e}", field::KEY))?;
        let value = text(field::VALUE)?;
        let ttl = text(field::TTL_MS)?;
        let (value, ttl_ms) = match op {
            Op::Set => {
                let value = value.ok_or_else(|| format!("field {} (value) is missing from a set", field::VALUE))?;
                let ttl_ms = match ttl {
                    None => None,
                    Some(t) => Some(decimal(&t).filter(|ms| (1..=MAX_TTL_MS).contains(ms)).ok_or_else(|| {
                        format!("field {}: {} is not a TTL in ms (1 to {MAX_TTL_MS})", field::TTL_MS, shorten(&t))
                    })?),
                };
                (value, ttl_ms)
            }
            Op::Delete => {
                if value.is_some() || ttl.is_some() {
                    return Err(format!(
                        "a delete must not carry a value ({}) or a TTL ({})",
                        field::VALUE,
                        field::TTL_MS
                    ));
                }
                (String::new(), None)
            }
        };
        let if_match = match text(field::IF_MATCH)? {
            None => None,
            Some(v) => Some(
                decimal(&v).ok_or_else(|| format!("field {}: {} is not a version", field::IF_MATCH, shorten(&v)))?,
            ),
        };
        let flag = |name: &str| -> Result<bool, String> {
            match text(name)?.as_deref() {
                None => Ok(false),
                Some("1") => Ok(true),
                Some(other) => Err(format!("field {name}: expected 1, got {}", shorten(other))),
            }
        };
        let if_none_match = flag(field::IF_NONE_MATCH)?;
        if if_none_match && if_match.is_some() {
            return Err(format!(
                "fields {} and {}: a task has one condition, not both",
                field::IF_MATCH,
                field::IF_NONE_MATCH
            ));
        }
        Ok(StreamTask {
            shard,
            stream_id: stream_id.to_string(),
            task_id,
            op,
            key,
            value,
            ttl_ms,
            if_match,
            if_none_match,
            notify: flag(field::NOTIFY)?,
        })
    }
}

/// Bits of a task id's sequence part that hold the stream id's sequence number; the bits above
/// hold the shard (zero outside a cluster, so ids from before shards read the same).
const SEQ_BITS: u32 = 48;

/// The task id of the task at `stream_id` in `shard`: its milliseconds, and its shard and
/// sequence number, as 16 hex digits each, so a task id is opaque, fixed-length and leads back to
/// its stream entry in one round trip. None for a stream id Redis does not make (`XADD *` numbers
/// entries within a millisecond from 0 up, far below 2^48).
pub fn task_id_of(stream_id: &str, shard: usize) -> Option<String> {
    let (ms, seq) = stream_id_parts(stream_id)?;
    let shard = u64::try_from(shard).ok().filter(|s| *s < 1 << (64 - SEQ_BITS))?;
    (seq < 1 << SEQ_BITS).then(|| format!("{ms:016x}{:016x}", shard << SEQ_BITS | seq))
}

/// The milliseconds and sequence number of a stream id `ms-seq`; None for anything else.
pub(super) fn stream_id_parts(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((decimal(ms)?, decimal(seq)?))
}

/// The milliseconds of a stream id: when Redis added the entry.
pub(super) fn stream_id_ms(id: &str) -> Option<u64> {
    stream_id_parts(id).map(|(ms, _)| ms)
}

/// The shard and stream id a task id stands for (see `task_id_of`); None unless it is 32 hex
/// digits.
pub fn stream_id_of(task_id: &str) -> Option<(usize, String)> {
    if task_id.len() != 32 || !task_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let ms = u64::from_str_radix(&task_id[..16], 16).ok()?;
    let seq = u64::from_str_radix(&task_id[16..], 16).ok()?;
    Some(((seq >> SEQ_BITS) as usize, format!("{ms}-{}", seq & ((1 << SEQ_BITS) - 1))))
}

/// A plain decimal number without sign or leading zeros (so it reads back as written).
pub(super) fn decimal(s: &str) -> Option<u64> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// Quotes untrusted text for a message, cut to a readable length.
fn shorten(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    if cut.len() < s.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// A stream entry that is no valid task, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub shard: usize,
    pub stream_id: String,
    pub reason: String,
}

/// Entries delivered to a worker: the tasks, and the entries that are no valid task.
#[derive(Debug, Clone, Default)]
pub struct Delivered {
    /// The shard they were read from.
    pub shard: usize,
    pub tasks: Vec<StreamTask>,
    pub malformed: Vec<Malformed>,
}

impl Delivered {
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.malformed.is_empty()
    }

    pub(super) fn new(shard: usize) -> Self {
        Self { shard, ..Self::default() }
    }

    pub(super) fn push(&mut self, stream_id: String, fields: Option<&HashMap<String, redis::Value>>) {
        let decoded = match fields {
            Some(f) => StreamTask::decode(&stream_id, self.shard, f),
            None => Err("the entry has no fields (it was deleted)".to_string()),
        };
        match decoded {
            Ok(t) => self.tasks.push(t),
            Err(reason) => self.malformed.push(Malformed { shard: self.shard, stream_id, reason }),
        }
    }
}

/// SHA-256 (hex) of what makes a write request the same request: operation, key, value, TTL and
/// conditions. The `?wait` of a retry does not count.
pub fn request_fingerprint(w: &WriteRequest) -> String {
    let canonical =
        serde_json::json!([w.op.as_str(), w.key.as_str(), w.value, w.ttl_seconds, w.if_match, w.if_none_match,]);
    Sha256::digest(canonical.to_string().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(fields: &[(&str, &str)]) -> HashMap<String, redis::Value> {
        fields.iter().map(|(k, v)| (k.to_string(), redis::Value::BulkString(v.as_bytes().to_vec()))).collect()
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn malformed_entries_say_what_is_wrong() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("foo", "bar")], "field op (operation) is missing"),
            (&[("t", "x"), ("op", "set"), ("k", "a"), ("v", "1")], "field t:"),
            (&[("t", ID), ("k", "a")], "field op (operation) is missing"),
            (&[("t", ID), ("op", "incr"), ("k", "a")], "unknown operation"),
            (&[("t", ID), ("op", "set"), ("v", "1")], "field k (key) is missing"),
            (&[("t", ID), ("op", "set"), ("k", ""), ("v", "1")], "field k: key must not be empty"),
            (&[("t", ID), ("op", "set"), ("k", "a")], "field v (value) is missing"),
            (&[("t", ID), ("op", "set"), ("k", "a"), ("v", "1"), ("ttl", "soon")], "field ttl:"),
            (&[("t", ID), ("op", "set"), ("k", "a"), ("v", "1"), ("ttl", "0")], "field ttl:"),
            (&[("t", ID), ("op", "set"), ("k", "a"), ("v", "1"), ("ttl", "1e3")], "field ttl:"),
            (&[("t", ID), ("op", "set"), ("k", "a"), ("v", "1"), ("if", "-1")], "field if:"),
            (&[("t", ID), ("op", "set"), ("k", "a"), ("v", "1"), ("if", "007")], "field if:"),
            (&[("t", ID), ("op", "set"), ("k", "a"), ("v", "1"), ("inm", "yes")], "field inm:"),
            (&[("t", ID), ("op", "set"), ("k", "a"), ("v", "1"), ("if", "3"), ("inm", "1")], "one condition"),
            (&[("t", ID), ("op", "delete"), ("k", "a"), ("v", "1")], "a delete must not carry"),
        ];
        for (fields, reason) in cases {
            let err = StreamTask::decode("1-1", 0, &bulk(fields)).unwrap_err();
            assert!(err.contains(reason), "{fields:?}: {err}");
        }
        let mut invalid_utf8 = bulk(&[("t", ID), ("op", "set"), ("k", "a")]);
        invalid_utf8.insert("v".into(), redis::Value::BulkString(vec![0xff, 0xfe]));
        assert_eq!(StreamTask::decode("1-1", 0, &invalid_utf8).unwrap_err(), "field v is not UTF-8");
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let t = StreamTask::decode("1-1", 0, &bulk(&[("t", ID), ("op", "delete"), ("k", "a"), ("x", "y")])).unwrap();
        assert_eq!((t.op, t.key.as_str(), t.stream_id.as_str()), (Op::Delete, "a", "1-1"));
    }

    #[test]
    fn fingerprints_tell_requests_apart() {
        let w = |key: &str, value: Option<&str>, ttl: Option<u64>| WriteRequest {
            op: if value.is_some() { Op::Set } else { Op::Delete },
            key: Key::parse(key).unwrap(),
            value: value.map(String::from),
            ttl_seconds: ttl,
            if_match: None,
            if_none_match: false,
            idempotency_key: Some("tok".into()),
            notify: false,
        };
        let a = request_fingerprint(&w("a", Some("1"), None));
        assert_eq!(a, request_fingerprint(&WriteRequest { notify: true, ..w("a", Some("1"), None) }));
        assert_eq!(a.len(), 64);
        for other in [w("b", Some("1"), None), w("a", Some("2"), None), w("a", Some("1"), Some(5)), w("a", None, None)]
        {
            assert_ne!(a, request_fingerprint(&other));
        }
        assert_ne!(a, request_fingerprint(&WriteRequest { if_match: Some(1), ..w("a", Some("1"), None) }));
    }

    mod prop {
        use super::*;
        use proptest::collection::hash_map;
        use proptest::prelude::*;

        fn any_value() -> impl Strategy<Value = redis::Value> {
            prop_oneof![
                any::<Vec<u8>>().prop_map(redis::Value::BulkString),
                ".{0,40}".prop_map(|s: String| redis::Value::BulkString(s.into_bytes())),
                "[0-9]{0,22}".prop_map(|s| redis::Value::BulkString(s.into_bytes())),
                prop_oneof![Just("set"), Just("delete"), Just("del"), Just("1"), Just("")]
                    .prop_map(|s| redis::Value::BulkString(s.as_bytes().to_vec())),
                any::<i64>().prop_map(redis::Value::Int),
                Just(redis::Value::Nil),
            ]
        }

        fn any_field() -> impl Strategy<Value = String> {
            prop_oneof![
                prop_oneof![
                    Just("t"),
                    Just("op"),
                    Just("k"),
                    Just("v"),
                    Just("ttl"),
                    Just("if"),
                    Just("inm"),
                    Just("w")
                ]
                .prop_map(String::from),
                ".{0,8}",
            ]
        }

        fn valid_task() -> impl Strategy<Value = StreamTask> {
            (
                (any::<u64>(), 0..1u64 << SEQ_BITS),
                any::<bool>(),
                "[^\\p{Cc}]{1,40}",
                ".{0,64}",
                proptest::option::of(1..=MAX_TTL_MS),
                proptest::option::of(any::<u64>()),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(|((ms, seq), set, key, value, ttl_ms, if_match, inm, notify)| StreamTask {
                    shard: 0,
                    stream_id: format!("{ms}-{seq}"),
                    task_id: format!("{ms:016x}{seq:016x}"),
                    op: if set { Op::Set } else { Op::Delete },
                    key,
                    value: if set { value } else { String::new() },
                    ttl_ms: if set { ttl_ms } else { None },
                    if_none_match: inm && if_match.is_none(),
                    if_match,
                    notify,
                })
        }

        proptest! {
            #[test]
            fn arbitrary_fields_never_panic(fields in hash_map(any_field(), any_value(), 0..10)) {
                if let Ok(t) = StreamTask::decode("5-0", 0, &fields) {
                    // Whatever decodes is a task the worker can apply as is.
                    prop_assert!(Key::parse(&t.key).is_ok());
                    prop_assert!(t.ttl_ms.is_none_or(|ms| (1..=MAX_TTL_MS).contains(&ms)));
                }
            }

            #[test]
            fn every_encoded_task_decodes_to_itself(task in valid_task()) {
                let fields: HashMap<String, redis::Value> = task
                    .fields()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), redis::Value::BulkString(v.into_bytes())))
                    .collect();
                prop_assert_eq!(StreamTask::decode(&task.stream_id, 0, &fields), Ok(task.clone()));
            }
        }
    }

    /// Each field name, as apply.lua reads it from a task's name/value pairs.
    #[test]
    fn apply_script_reads_every_field_by_its_name() {
        let script = include_str!("../lua/apply.lua");
        for (name, _) in FIELDS {
            assert!(script.contains(&format!("f['{name}']")), "apply.lua does not read field {name}");
        }
        // The header comment names them too.
        for (name, _) in FIELDS {
            assert!(script.lines().any(|l| l.starts_with("--") && l.contains(&format!(" {name} "))), "{name}");
        }
        // dead_letter.lua keeps the op and key under their field names when the entry itself is
        // gone.
        let dead_letter = include_str!("../lua/dead_letter.lua");
        for name in [field::OP, field::KEY] {
            assert!(dead_letter.contains(&format!("{{'{name}', ARGV[")), "dead_letter.lua does not write {name}");
        }
        // The scripts that write entries copy the fields they are given; none spells one out.
        for script in [include_str!("../lua/enqueue.lua"), include_str!("../lua/replay.lua")] {
            assert!(script.contains("the stream entry's fields") || script.contains("the new stream entry's fields"));
        }
    }

    #[test]
    fn task_ids_lead_back_to_their_stream_entry_and_shard() {
        for stream_id in ["0-0", "1-1", "1700000000000-0", "18446744073709551615-281474976710655"] {
            for shard in [0, 1, 15, 1023] {
                let id = task_id_of(stream_id, shard).unwrap();
                assert_eq!(id.len(), 32);
                assert_eq!(stream_id_of(&id), Some((shard, stream_id.to_string())));
            }
        }
        assert_eq!(task_id_of("1700000000000-0", 0).unwrap(), "0000018bcfe568000000000000000000");
        assert_eq!(task_id_of("1700000000000-5", 3).unwrap(), "0000018bcfe568000003000000000005");
        for bad in ["", "1", "1-", "-1", "01-1", "1-1-1", "a-1", "18446744073709551616-0", "1-281474976710656"] {
            assert_eq!(task_id_of(bad, 0), None, "{bad}");
        }
        assert_eq!(task_id_of("1-1", 65536), None, "a shard number past 16 bits");
        for bad in ["", "0123", "0123456789abcdef0123456789abcdeg", "0123456789abcdef0123456789abcdef0"] {
            assert_eq!(stream_id_of(bad), None, "{bad}");
        }
        // an entry without a task id field takes its stream id's and its shard's
        let t = StreamTask::decode("1700000000000-0", 0, &bulk(&[("op", "delete"), ("k", "a")])).unwrap();
        assert_eq!(t.task_id, "0000018bcfe568000000000000000000");
        let t = StreamTask::decode("1700000000000-0", 2, &bulk(&[("op", "delete"), ("k", "a")])).unwrap();
        assert_eq!((t.shard, t.task_id.as_str()), (2, "0000018bcfe568000002000000000000"));
    }

    #[test]
    fn field_names_are_distinct() {
        let names: std::collections::HashSet<_> = FIELDS.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), FIELDS.len());
    }
}
