//! `--data-dir`: the emulator's state on disk, so a restart loses nothing.
//!
//! One file, `DIR/state.jsonl`: a header line (format, resource id, epoch, the token signing
//! secrets), then one JSON event per line, appended under the store's lock before the change
//! is made in memory. Changes that matter (create, revoke, delete) are fsynced before they are
//! acknowledged; a token's record is written but not fsynced, which survives a crash of the
//! emulator (the kernel has it) and at worst, on a crash of the machine, undercounts tokens.
//! Tokens need nothing on disk to stay correct: each start raises the epoch, the high bits of
//! every token's sequence number, so a token issued after a restart orders after every
//! revocation made before it.
//!
//! At start the file is read and replayed, then rewritten compactly (one snapshot line per
//! identity) through a temporary file, fsync and rename, so it never holds a half state. A
//! last line without its newline is a write the emulator was killed in the middle of, never
//! acknowledged, and is dropped; anything else that does not parse, a format newer than this
//! build's, or a resource id other than `--resource-id` stops the start with an error naming the
//! file and line. Nothing is ever reset silently.

use super::access::{EntraAssignment, TeamsExtensionAssignment};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The journal format this build writes and reads: 2 added the `/access` assignments (a
/// format-1 file reads as one without any).
pub const FORMAT: u32 = 2;
const KIND: &str = "acs-emulator-state";
const FILE_NAME: &str = "state.jsonl";

/// The first line of the journal.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    kind: String,
    format: u32,
    resource_id: String,
    /// Raised by one at every start.
    epoch: u64,
    /// The secret of ACS user tokens (base64).
    token_secret: String,
    /// The secret of the Entra endpoint's tokens (base64).
    entra_secret: String,
}

/// One change, as a journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Event {
    #[serde(rename_all = "camelCase")]
    Create {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        custom_id: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Token {
        id: String,
        at_ns: u64,
    },
    /// Tokens with `seq` below `below`, or issued (whole seconds) before `from`, are revoked.
    #[serde(rename_all = "camelCase")]
    Revoke {
        id: String,
        below: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<i64>,
    },
    Delete {
        id: String,
    },
    /// A whole identity, as compaction writes it.
    Snapshot(Snapshot),
    /// A Teams Phone extension assignment, created or replaced (also how compaction writes
    /// each one).
    TeamsExtensionAssign(TeamsExtensionAssignment),
    #[serde(rename_all = "camelCase")]
    TeamsExtensionUnassign {
        tenant_id: String,
        object_id: String,
    },
    /// An Entra ID assignment, created or replaced (also how compaction writes each one).
    EntraAssign(EntraAssignment),
    #[serde(rename_all = "camelCase")]
    EntraUnassign {
        object_id: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    pub deleted: bool,
    pub tokens_issued: u64,
    pub revocations: u64,
    pub revoked_below: u64,
    pub valid_from: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_token_issued_at_ns: Option<u64>,
}

/// Why the state in a data directory could not be used. The emulator does not start.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} line {line} is not valid emulator state ({reason}); move the file away to start empty"
    )]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "{path} has state format {found}, newer than this emulator's {FORMAT}; use a newer acs-emulator or another --data-dir"
    )]
    NewerFormat { path: PathBuf, found: u32 },
    #[error("{path} belongs to resource {stored}, not --resource-id {asked}")]
    ResourceMismatch {
        path: PathBuf,
        stored: String,
        asked: String,
    },
}

impl JournalError {
    pub fn corrupt(path: &Path, line: usize, reason: impl std::fmt::Display) -> Self {
        JournalError::Corrupt {
            path: path.to_path_buf(),
            line,
            reason: reason.to_string(),
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What was found in a data directory, ready to replay.
#[derive(Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub resource_id: String,
    pub epoch: u64,
    pub token_secret: [u8; 32],
    pub entra_secret: [u8; 32],
    /// Each event with its line number.
    pub events: Vec<(usize, Event)>,
    pub journal: Journal,
}

/// The open journal: appends and fsyncs.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    header: String,
    file: Mutex<Arc<File>>,
    /// Bytes appended, and bytes known to be on disk.
    written: AtomicU64,
    synced: AtomicU64,
    /// One fsync at a time; a waiter finding its bytes synced by another's returns at once.
    gate: tokio::sync::Mutex<()>,
    /// A write or fsync failed: the file may end in a partial line, so nothing more is
    /// written or acknowledged.
    broken: AtomicBool,
}

/// Opens (or creates) the state in `dir`. `resource_id` is `--resource-id`: it must match
/// the stored one; absent, the stored one (or, for a new directory, a random one) is used.
pub fn open(
    dir: &Path,
    resource_id: Option<&str>,
    random_resource_id: impl FnOnce() -> String,
) -> Result<Loaded, JournalError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(JournalError::io(dir))?;
    let path = dir.join(FILE_NAME);
    let mut text = Vec::new();
    match File::open(&path) {
        Ok(mut file) => {
            file.read_to_end(&mut text)
                .map_err(JournalError::io(&path))?;
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(JournalError::io(&path)(error)),
    }
    let (header, events) = if text.is_empty() {
        let header = Header {
            kind: KIND.into(),
            format: FORMAT,
            resource_id: resource_id.map_or_else(random_resource_id, str::to_string),
            epoch: 0,
            token_secret: B64.encode(rand::random::<[u8; 32]>()),
            entra_secret: B64.encode(rand::random::<[u8; 32]>()),
        };
        (header, Vec::new())
    } else {
        parse(&path, &text)?
    };
    if let Some(asked) = resource_id
        && asked != header.resource_id
    {
        return Err(JournalError::ResourceMismatch {
            path,
            stored: header.resource_id,
            asked: asked.to_string(),
        });
    }
    let secret = |value: &str, what: &str| -> Result<[u8; 32], JournalError> {
        B64.decode(value)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                JournalError::corrupt(&path, 1, format!("{what} is not 32 bytes of base64"))
            })
    };
    let token_secret = secret(&header.token_secret, "tokenSecret")?;
    let entra_secret = secret(&header.entra_secret, "entraSecret")?;
    let header = Header {
        epoch: header.epoch + 1,
        ..header
    };
    let header_line = serde_json::to_string(&header).unwrap_or_default();
    let journal = Journal {
        path: path.clone(),
        header: header_line,
        // Replaced by the compacted file before the first append.
        file: Mutex::new(Arc::new(
            File::open("/dev/null").map_err(JournalError::io(&path))?,
        )),
        written: AtomicU64::new(0),
        synced: AtomicU64::new(0),
        gate: tokio::sync::Mutex::new(()),
        broken: AtomicBool::new(false),
    };
    Ok(Loaded {
        path,
        resource_id: header.resource_id,
        epoch: header.epoch,
        token_secret,
        entra_secret,
        events,
        journal,
    })
}

fn parse(path: &Path, text: &[u8]) -> Result<(Header, Vec<(usize, Event)>), JournalError> {
    let text = std::str::from_utf8(text)
        .map_err(|e| JournalError::corrupt(path, 0, format!("not UTF-8: {e}")))?;
    let mut lines: Vec<&str> = text.split('\n').collect();
    // The text after the last newline: empty, or a write cut short by a kill.
    let torn = lines.pop().unwrap_or_default();
    if !torn.is_empty() {
        tracing::warn!(
            path = %path.display(),
            bytes = torn.len(),
            "dropping an incomplete last record (the emulator stopped while writing it; it was never acknowledged)"
        );
    }
    let Some(first) = lines.first() else {
        return Err(JournalError::corrupt(path, 1, "no header line"));
    };
    let probe: serde_json::Value = serde_json::from_str(first)
        .map_err(|e| JournalError::corrupt(path, 1, format!("header: {e}")))?;
    if probe["kind"] != KIND {
        return Err(JournalError::corrupt(
            path,
            1,
            "not an acs-emulator state file",
        ));
    }
    let found = probe["format"].as_u64().unwrap_or(0);
    if found > u64::from(FORMAT) {
        return Err(JournalError::NewerFormat {
            path: path.to_path_buf(),
            found: u32::try_from(found).unwrap_or(u32::MAX),
        });
    }
    let header: Header = serde_json::from_value(probe)
        .map_err(|e| JournalError::corrupt(path, 1, format!("header: {e}")))?;
    let mut events = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate().skip(1) {
        let event: Event =
            serde_json::from_str(line).map_err(|e| JournalError::corrupt(path, index + 1, e))?;
        events.push((index + 1, event));
    }
    Ok((header, events))
}

impl Journal {
    /// Replaces the file with the header and `events`, crash-safely, and opens it for appends.
    pub fn compact(&self, events: &[Event]) -> Result<(), JournalError> {
        let path = &self.path;
        let temp = path.with_extension("jsonl.tmp");
        let mut text = String::with_capacity(64 * (events.len() + 1));
        text.push_str(&self.header);
        text.push('\n');
        for event in events {
            text.push_str(&serde_json::to_string(event).unwrap_or_default());
            text.push('\n');
        }
        let io = JournalError::io;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io(&temp))?;
        file.write_all(text.as_bytes()).map_err(io(&temp))?;
        file.sync_all().map_err(io(&temp))?;
        drop(file);
        std::fs::rename(&temp, path).map_err(io(path))?;
        if let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io(path))?;
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(file);
        let len = text.len() as u64;
        self.written.store(len, Ordering::Release);
        self.synced.store(len, Ordering::Release);
        Ok(())
    }

    /// Appends one event. Called under the store's lock, so lines are in the order of the
    /// changes. `Err` (logged here) when the journal cannot take it.
    pub fn append(&self, event: &Event) -> Result<(), ()> {
        if self.broken.load(Ordering::Acquire) {
            return Err(());
        }
        let mut line = serde_json::to_vec(event).unwrap_or_default();
        line.push(b'\n');
        let file = Arc::clone(&self.file.lock().unwrap_or_else(PoisonError::into_inner));
        match (&*file).write_all(&line) {
            Ok(()) => {
                self.written.fetch_add(line.len() as u64, Ordering::AcqRel);
                Ok(())
            }
            Err(error) => {
                self.fail("write", &error);
                Err(())
            }
        }
    }

    /// Returns once everything appended before the call is on disk.
    pub async fn sync(&self) -> Result<(), ()> {
        let wanted = self.written.load(Ordering::Acquire);
        if self.synced.load(Ordering::Acquire) >= wanted {
            return self.check();
        }
        let _gate = self.gate.lock().await;
        if self.synced.load(Ordering::Acquire) >= wanted {
            return self.check();
        }
        // Everything written by now is covered by this fsync, other callers' lines too.
        let target = self.written.load(Ordering::Acquire);
        let file = Arc::clone(&self.file.lock().unwrap_or_else(PoisonError::into_inner));
        match tokio::task::spawn_blocking(move || file.sync_data()).await {
            Ok(Ok(())) => {
                self.synced.fetch_max(target, Ordering::AcqRel);
                self.check()
            }
            Ok(Err(error)) => {
                self.fail("fsync", &error);
                Err(())
            }
            Err(error) => {
                self.fail("fsync", &std::io::Error::other(error.to_string()));
                Err(())
            }
        }
    }

    fn check(&self) -> Result<(), ()> {
        if self.broken.load(Ordering::Acquire) {
            Err(())
        } else {
            Ok(())
        }
    }

    fn fail(&self, what: &str, error: &std::io::Error) {
        if !self.broken.swap(true, Ordering::AcqRel) {
            tracing::error!(
                path = %self.path.display(),
                %error,
                "cannot {what} the state journal: changes are refused from now on (restart to recover what was saved)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(dir: &Path) -> Loaded {
        open(dir, None, || "r".into()).unwrap()
    }

    #[test]
    fn a_new_directory_gets_a_header_and_epoch_one() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = fresh(dir.path());
        assert_eq!(loaded.epoch, 1);
        assert!(loaded.events.is_empty());
        loaded.journal.compact(&[]).unwrap();
        let again = fresh(dir.path());
        assert_eq!(again.epoch, 2);
        assert_eq!(again.token_secret, loaded.token_secret);
        assert_eq!(again.entra_secret, loaded.entra_secret);
    }

    #[test]
    fn events_survive_and_a_torn_last_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = fresh(dir.path());
        loaded.journal.compact(&[]).unwrap();
        let create = Event::Create {
            id: "8:acs:r_1".into(),
            custom_id: Some("alice".into()),
        };
        loaded.journal.append(&create).unwrap();
        drop(loaded);
        let path = dir.path().join(FILE_NAME);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"op":"delete","id":"8:ac"#).unwrap();
        let again = fresh(dir.path());
        assert_eq!(again.events, vec![(2, create)]);
    }

    #[test]
    fn corrupt_newer_and_foreign_files_are_refused_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let loaded = fresh(dir.path());
        loaded.journal.compact(&[]).unwrap();
        let header = std::fs::read_to_string(&path).unwrap();

        std::fs::write(&path, format!("{header}{{\"op\":\"nonsense\"}}\n")).unwrap();
        let error = open(dir.path(), None, || "r".into()).unwrap_err();
        assert!(
            matches!(error, JournalError::Corrupt { line: 2, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("line 2"), "{error}");

        let newer = header.replace("\"format\":2", "\"format\":3");
        std::fs::write(&path, newer).unwrap();
        let error = open(dir.path(), None, || "r".into()).unwrap_err();
        assert!(
            matches!(error, JournalError::NewerFormat { found: 3, .. }),
            "{error}"
        );

        std::fs::write(&path, "{\"hello\":1}\n").unwrap();
        let error = open(dir.path(), None, || "r".into()).unwrap_err();
        assert!(
            error.to_string().contains("not an acs-emulator state file"),
            "{error}"
        );

        std::fs::write(&path, &header).unwrap();
        let error = open(dir.path(), Some("other"), || "r".into()).unwrap_err();
        assert!(
            matches!(error, JournalError::ResourceMismatch { .. }),
            "{error}"
        );
    }
}
