//! The emulated resource's identities: which exist, which were deleted, and how many tokens
//! and revocations each has seen. In memory, behind one mutex held only for map updates.
//!
//! Tokens themselves are not stored: each carries a sequence number (`seq`), and a revocation
//! records the next sequence number, so "issued before the revoke" is one comparison and the
//! memory per identity stays constant however many tokens it gets.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The emulator answers 404 for ids it never created and for deleted ones alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("identity not found")]
pub struct IdentityNotFound;

/// Whether a token of an identity, with a given sequence number, would still be honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Active,
    Revoked,
    Deleted,
    Unknown,
}

/// One identity as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySummary {
    pub id: String,
    pub deleted: bool,
    pub tokens_issued: u64,
    pub revocations: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Record {
    /// Creation order, for a stable listing.
    order: u64,
    deleted: bool,
    tokens_issued: u64,
    revocations: u64,
    /// Tokens with a lower `seq` are revoked.
    revoked_below: u64,
}

#[derive(Debug, Default)]
struct Inner {
    identities: HashMap<String, Record>,
    /// Next token sequence number, shared by all identities.
    next_seq: u64,
    created: u64,
}

/// The identities of one emulated ACS resource.
#[derive(Debug)]
pub struct IdentityStore {
    resource_id: String,
    inner: Mutex<Inner>,
}

impl IdentityStore {
    pub fn new(resource_id: String) -> Self {
        Self {
            resource_id,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The immutable id of the emulated resource: the first GUID of every identity id.
    pub fn resource_id(&self) -> &str {
        &self.resource_id
    }

    /// Creates an identity with a fresh id `8:acs:<resource>_<uuid>`.
    pub fn create(&self) -> String {
        let mut inner = self.lock();
        let id = loop {
            let candidate = format!("8:acs:{}_{}", self.resource_id, random_uuid());
            if !inner.identities.contains_key(&candidate) {
                break candidate;
            }
        };
        inner.created += 1;
        let order = inner.created;
        inner.identities.insert(
            id.clone(),
            Record {
                order,
                ..Record::default()
            },
        );
        id
    }

    /// Counts a token for a live identity and returns its sequence number.
    pub fn issue_token(&self, id: &str) -> Result<u64, IdentityNotFound> {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        let record = live(&mut inner, id)?;
        record.tokens_issued += 1;
        inner.next_seq += 1;
        Ok(seq)
    }

    /// Revokes every token issued to the identity so far.
    pub fn revoke(&self, id: &str) -> Result<(), IdentityNotFound> {
        let mut inner = self.lock();
        let next_seq = inner.next_seq;
        let record = live(&mut inner, id)?;
        record.revocations += 1;
        record.revoked_below = next_seq;
        Ok(())
    }

    /// Deletes the identity: its tokens die and the id answers 404 from now on.
    pub fn delete(&self, id: &str) -> Result<(), IdentityNotFound> {
        let mut inner = self.lock();
        live(&mut inner, id)?.deleted = true;
        Ok(())
    }

    pub fn standing(&self, id: &str, seq: u64) -> Standing {
        let inner = self.lock();
        match inner.identities.get(id) {
            None => Standing::Unknown,
            Some(record) if record.deleted => Standing::Deleted,
            Some(record) if seq < record.revoked_below => Standing::Revoked,
            Some(_) => Standing::Active,
        }
    }

    /// Every identity ever created, deleted ones included, oldest first.
    pub fn summaries(&self) -> Vec<IdentitySummary> {
        let inner = self.lock();
        let mut records: Vec<(&String, &Record)> = inner.identities.iter().collect();
        records.sort_by_key(|(_, record)| record.order);
        records
            .into_iter()
            .map(|(id, record)| IdentitySummary {
                id: id.clone(),
                deleted: record.deleted,
                tokens_issued: record.tokens_issued,
                revocations: record.revocations,
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code path panics while holding the lock; if one ever did, the counters are
        // still consistent enough for a test tool.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn live<'a>(inner: &'a mut Inner, id: &str) -> Result<&'a mut Record, IdentityNotFound> {
    inner
        .identities
        .get_mut(id)
        .filter(|record| !record.deleted)
        .ok_or(IdentityNotFound)
}

/// A random UUID in the 8-4-4-4-12 hex form (version 4 bits set).
pub fn random_uuid() -> String {
    let bits: u128 = rand::random();
    let bits = (bits & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOURCE: &str = "2dee53b4-368b-45b4-ab52-8493fb117652";

    fn store() -> IdentityStore {
        IdentityStore::new(RESOURCE.into())
    }

    #[test]
    fn ids_look_like_acs_ids() {
        let store = store();
        let id = store.create();
        let suffix = id
            .strip_prefix(&format!("8:acs:{RESOURCE}_"))
            .expect("resource prefix");
        let groups: Vec<usize> = suffix.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_ne!(store.create(), id);
    }

    #[test]
    fn revoke_kills_earlier_tokens_only() {
        let store = store();
        let id = store.create();
        let before = store.issue_token(&id).unwrap();
        assert_eq!(store.standing(&id, before), Standing::Active);
        store.revoke(&id).unwrap();
        let after = store.issue_token(&id).unwrap();
        assert_eq!(store.standing(&id, before), Standing::Revoked);
        assert_eq!(store.standing(&id, after), Standing::Active);
    }

    #[test]
    fn another_identitys_revoke_does_not_touch_mine() {
        let store = store();
        let (mine, theirs) = (store.create(), store.create());
        let token = store.issue_token(&mine).unwrap();
        store.revoke(&theirs).unwrap();
        assert_eq!(store.standing(&mine, token), Standing::Active);
    }

    #[test]
    fn delete_is_final() {
        let store = store();
        let id = store.create();
        let token = store.issue_token(&id).unwrap();
        store.delete(&id).unwrap();
        assert_eq!(store.standing(&id, token), Standing::Deleted);
        assert_eq!(store.issue_token(&id), Err(IdentityNotFound));
        assert_eq!(store.revoke(&id), Err(IdentityNotFound));
        assert_eq!(store.delete(&id), Err(IdentityNotFound));
    }

    #[test]
    fn unknown_ids_are_not_found() {
        let store = store();
        assert_eq!(store.issue_token("8:acs:nope"), Err(IdentityNotFound));
        assert_eq!(store.standing("8:acs:nope", 0), Standing::Unknown);
    }

    #[test]
    fn summaries_count_and_keep_creation_order() {
        let store = store();
        let ids: Vec<String> = (0..5).map(|_| store.create()).collect();
        store.issue_token(&ids[1]).unwrap();
        store.issue_token(&ids[1]).unwrap();
        store.revoke(&ids[1]).unwrap();
        store.delete(&ids[3]).unwrap();
        let summaries = store.summaries();
        let listed: Vec<&str> = summaries.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            summaries[1],
            IdentitySummary {
                id: ids[1].clone(),
                deleted: false,
                tokens_issued: 2,
                revocations: 1
            }
        );
        assert!(summaries[3].deleted);
    }

    #[test]
    fn uuid_has_version_and_variant() {
        for _ in 0..100 {
            let uuid = random_uuid();
            assert_eq!(&uuid[14..15], "4");
            assert!(matches!(&uuid[19..20], "8" | "9" | "a" | "b"), "{uuid}");
        }
    }
}
