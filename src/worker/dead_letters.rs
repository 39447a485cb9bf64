//! `kvq-worker dead-letters ...`: look at the dead-letter stream and replay its writes.
//!
//! - `kvq-worker dead-letters list` prints one JSON object per dead letter: `id` (in the
//!   dead-letter stream), `seq` (the original stream id), `error`, `attempts`, `at` (RFC 3339),
//!   `task` (the original entry's fields), and `replayable` (with `problem` when it is not).
//! - `kvq-worker dead-letters replay --all` or `... replay ID...` enqueues each dead letter's write
//!   again as a new task and removes the dead letter, atomically. The new task is accepted now:
//!   it is ordered after every write accepted before the replay (it overwrites them, and later
//!   writes overwrite it), and its conditions (If-Match / If-None-Match) are checked again when
//!   it is applied. Prints `replayed <id> as task <task id>` per dead letter. Dead letters of
//!   entries that were no valid task cannot be replayed; they are reported and left.
//!
//! Exit codes: 0 done, 1 some dead letters were missing or cannot be replayed, 2 wrong usage,
//! 3 Redis failed.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use crate::store::{DeadLetter, Store, StoreError};
use crate::timefmt::rfc3339_ms;

pub const USAGE: &str = "usage: kvq-worker [dead-letters list | dead-letters replay (--all | ID...)]";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the worker (no arguments).
    Run,
    List,
    ReplayAll,
    Replay(Vec<String>),
}

impl Command {
    /// Parses the arguments after the program name.
    pub fn parse(args: &[String]) -> Result<Command, String> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match args.as_slice() {
            [] => Ok(Command::Run),
            ["dead-letters", "list"] => Ok(Command::List),
            ["dead-letters", "replay", "--all"] => Ok(Command::ReplayAll),
            ["dead-letters", "replay", ids @ ..] if !ids.is_empty() && !ids.iter().any(|i| i.starts_with('-')) => {
                Ok(Command::Replay(ids.iter().map(|s| s.to_string()).collect()))
            }
            _ => Err(USAGE.to_string()),
        }
    }
}

/// A dead letter as printed by `list`.
pub fn describe(d: &DeadLetter) -> Value {
    let mut task = Map::new();
    for (name, value) in &d.task_fields {
        task.insert(name.clone(), Value::String(String::from_utf8_lossy(value).into_owned()));
    }
    let mut out = json!({
        "id": d.id,
        "seq": d.meta("seq"),
        "error": d.meta("error"),
        "attempts": d.meta("attempts").and_then(|a| a.parse::<u64>().ok()),
        "at": d.meta("at").and_then(|a| a.parse::<u64>().ok()).map(rfc3339_ms),
        "task": task,
    });
    match d.task() {
        Ok(_) => out["replayable"] = Value::Bool(true),
        Err(why) => {
            out["replayable"] = Value::Bool(false);
            out["problem"] = Value::String(why);
        }
    }
    out
}

/// Runs a dead-letter command, printing to stdout (results) and stderr (problems); returns the
/// exit code.
pub async fn run(store: &Store, command: Command) -> u8 {
    match execute(store, command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kvq-worker: {e}");
            3
        }
    }
}

/// Dead letters read per round trip.
const PAGE: usize = 100;

async fn execute(store: &Store, command: Command) -> Result<u8, StoreError> {
    match command {
        Command::Run => Ok(2),
        Command::List => {
            let mut after: Option<String> = None;
            loop {
                let page = store.dead_letters(after.as_deref(), PAGE).await?;
                for d in &page {
                    println!("{}", describe(d));
                }
                match page.last() {
                    Some(last) if page.len() == PAGE => after = Some(last.id.clone()),
                    _ => return Ok(0),
                }
            }
        }
        Command::ReplayAll => {
            let mut code = 0;
            let mut after: Option<String> = None;
            loop {
                let page = store.dead_letters(after.as_deref(), PAGE).await?;
                for d in &page {
                    code = code.max(replay(store, d).await?);
                }
                match page.last() {
                    Some(last) if page.len() == PAGE => after = Some(last.id.clone()),
                    _ => return Ok(code),
                }
            }
        }
        Command::Replay(ids) => {
            let mut code = 0;
            let mut done = HashSet::new();
            for id in &ids {
                if !done.insert(id.as_str()) {
                    continue;
                }
                match store.dead_letter_by_id(id).await? {
                    Some(d) => code = code.max(replay(store, &d).await?),
                    None => {
                        eprintln!("not found {id}: no such dead letter");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
    }
}

async fn replay(store: &Store, d: &DeadLetter) -> Result<u8, StoreError> {
    match store.replay_dead_letter(d).await? {
        Ok(Some(task_id)) => {
            println!("replayed {} as task {task_id}", d.id);
            Ok(0)
        }
        Ok(None) => {
            eprintln!("not found {}: replayed or removed meanwhile", d.id);
            Ok(1)
        }
        Err(why) => {
            eprintln!("skipped {}: cannot be replayed: {why}", d.id);
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_lines() {
        assert_eq!(Command::parse(&args(&[])), Ok(Command::Run));
        assert_eq!(Command::parse(&args(&["dead-letters", "list"])), Ok(Command::List));
        assert_eq!(Command::parse(&args(&["dead-letters", "replay", "--all"])), Ok(Command::ReplayAll));
        assert_eq!(
            Command::parse(&args(&["dead-letters", "replay", "1-0", "2-0"])),
            Ok(Command::Replay(args(&["1-0", "2-0"])))
        );
        assert!(Command::parse(&args(&["dead-letters", "replay"])).is_err());
        assert!(Command::parse(&args(&["dead-letters", "replay", "--al"])).is_err());
        assert!(Command::parse(&args(&["dead-letters"])).is_err());
        assert!(Command::parse(&args(&["--help"])).is_err());
    }
}
