//! The emulated resource's identities: which exist, which were deleted, and how many tokens
//! and revocations each has seen. In memory, behind one mutex held only for map updates.
//!
//! Tokens themselves are not stored: each carries a sequence number (`seq`), and a revocation
//! records the next sequence number, so "issued before the revoke" is one comparison and the
//! memory per identity stays constant however many tokens it gets.
//!
//! An identity may carry a `customId` (preview api-versions): creating with a `customId` that a
//! live identity already has returns that identity instead of a new one.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

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
    /// Creation order (1 for the first identity): where a listing continues.
    pub order: u64,
    pub custom_id: Option<String>,
    pub deleted: bool,
    pub tokens_issued: u64,
    pub revocations: u64,
    pub last_token_issued_at: Option<SystemTime>,
}

#[derive(Debug, Clone, Default)]
struct Record {
    /// Creation order, for a stable listing.
    order: u64,
    custom_id: Option<String>,
    last_token_issued_at: Option<SystemTime>,
    deleted: bool,
    tokens_issued: u64,
    revocations: u64,
    /// Tokens with a lower `seq` are revoked.
    revoked_below: u64,
}

#[derive(Debug, Default)]
struct Inner {
    identities: HashMap<String, Record>,
    /// The live identity holding each `customId`; a deleted identity gives its `customId` up.
    by_custom_id: HashMap<String, String>,
    /// Every id by its creation order, for listing a page at a time.
    by_order: BTreeMap<u64, String>,
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
        self.insert(&mut self.lock(), None)
    }

    /// The live identity with this `customId`, or a new one that gets it. One lock for both,
    /// so concurrent creates with the same `customId` agree on one identity.
    pub fn create_with_custom_id(&self, custom_id: &str) -> String {
        let mut inner = self.lock();
        if let Some(id) = inner.by_custom_id.get(custom_id) {
            return id.clone();
        }
        let id = self.insert(&mut inner, Some(custom_id.to_string()));
        inner.by_custom_id.insert(custom_id.to_string(), id.clone());
        id
    }

    fn insert(&self, inner: &mut Inner, custom_id: Option<String>) -> String {
        let id = loop {
            let candidate = format!("8:acs:{}_{}", self.resource_id, random_uuid());
            if !inner.identities.contains_key(&candidate) {
                break candidate;
            }
        };
        inner.created += 1;
        let order = inner.created;
        inner.by_order.insert(order, id.clone());
        inner.identities.insert(
            id.clone(),
            Record {
                order,
                custom_id,
                ..Record::default()
            },
        );
        id
    }

    /// Counts a token for a live identity, issued `at`, and returns its sequence number.
    pub fn issue_token(&self, id: &str, at: SystemTime) -> Result<u64, IdentityNotFound> {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        let record = live(&mut inner, id)?;
        record.tokens_issued += 1;
        record.last_token_issued_at = Some(at);
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
        let record = live(&mut inner, id)?;
        record.deleted = true;
        if let Some(custom_id) = record.custom_id.clone() {
            inner.by_custom_id.remove(&custom_id);
        }
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
        self.page(0, usize::MAX).0
    }

    /// Up to `limit` identities created after the one with creation order `after` (0: from
    /// the first), oldest first, and the order to continue after when more remain.
    pub fn page(&self, after: u64, limit: usize) -> (Vec<IdentitySummary>, Option<u64>) {
        let inner = self.lock();
        let mut listed = Vec::new();
        let mut rest = inner.by_order.range(after.saturating_add(1)..);
        for (_, id) in rest.by_ref().take(limit) {
            if let Some(record) = inner.identities.get(id) {
                listed.push(summary(id, record));
            }
        }
        let more = rest.next().is_some();
        let last = listed.last().map(|s: &IdentitySummary| s.order);
        (listed, last.filter(|_| more))
    }

    /// One identity, deleted or not.
    pub fn summary(&self, id: &str) -> Option<IdentitySummary> {
        let inner = self.lock();
        inner.identities.get(id).map(|record| summary(id, record))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No code path panics while holding the lock; if one ever did, the counters are
        // still consistent enough for a test tool.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn summary(id: &str, record: &Record) -> IdentitySummary {
    IdentitySummary {
        id: id.to_string(),
        order: record.order,
        custom_id: record.custom_id.clone(),
        deleted: record.deleted,
        tokens_issued: record.tokens_issued,
        revocations: record.revocations,
        last_token_issued_at: record.last_token_issued_at,
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
        let before = store.issue_token(&id, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(store.standing(&id, before), Standing::Active);
        store.revoke(&id).unwrap();
        let after = store.issue_token(&id, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(store.standing(&id, before), Standing::Revoked);
        assert_eq!(store.standing(&id, after), Standing::Active);
    }

    #[test]
    fn another_identitys_revoke_does_not_touch_mine() {
        let store = store();
        let (mine, theirs) = (store.create(), store.create());
        let token = store.issue_token(&mine, SystemTime::UNIX_EPOCH).unwrap();
        store.revoke(&theirs).unwrap();
        assert_eq!(store.standing(&mine, token), Standing::Active);
    }

    #[test]
    fn delete_is_final() {
        let store = store();
        let id = store.create();
        let token = store.issue_token(&id, SystemTime::UNIX_EPOCH).unwrap();
        store.delete(&id).unwrap();
        assert_eq!(store.standing(&id, token), Standing::Deleted);
        assert_eq!(
            store.issue_token(&id, SystemTime::UNIX_EPOCH),
            Err(IdentityNotFound)
        );
        assert_eq!(store.revoke(&id), Err(IdentityNotFound));
        assert_eq!(store.delete(&id), Err(IdentityNotFound));
    }

    #[test]
    fn unknown_ids_are_not_found() {
        let store = store();
        assert_eq!(
            store.issue_token("8:acs:nope", SystemTime::UNIX_EPOCH),
            Err(IdentityNotFound)
        );
        assert_eq!(store.standing("8:acs:nope", 0), Standing::Unknown);
    }

    #[test]
    fn summaries_count_and_keep_creation_order() {
        let store = store();
        let ids: Vec<String> = (0..5).map(|_| store.create()).collect();
        store.issue_token(&ids[1], SystemTime::UNIX_EPOCH).unwrap();
        store.issue_token(&ids[1], SystemTime::UNIX_EPOCH).unwrap();
        store.revoke(&ids[1]).unwrap();
        store.delete(&ids[3]).unwrap();
        let summaries = store.summaries();
        let listed: Vec<&str> = summaries.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            summaries[1],
            IdentitySummary {
                id: ids[1].clone(),
                order: 2,
                custom_id: None,
                deleted: false,
                tokens_issued: 2,
                revocations: 1,
                last_token_issued_at: Some(SystemTime::UNIX_EPOCH),
            }
        );
        assert!(summaries[3].deleted);
    }

    #[test]
    fn pages_cover_every_identity_once_in_order() {
        let store = store();
        let ids: Vec<String> = (0..7).map(|_| store.create()).collect();
        store.delete(&ids[2]).unwrap();
        let mut listed = Vec::new();
        let mut after = 0;
        let mut pages = 0;
        loop {
            let (page, next) = store.page(after, 3);
            assert!(page.len() <= 3);
            pages += 1;
            listed.extend(page.into_iter().map(|s| s.id));
            match next {
                Some(next) => after = next,
                None => break,
            }
        }
        assert_eq!(listed, ids);
        assert_eq!(pages, 3);
        // Exactly one full page: nothing to continue with.
        assert_eq!(store.page(4, 3).1, None);
        assert_eq!(store.page(7, 3), (vec![], None));
    }

    #[test]
    fn a_custom_id_names_one_live_identity() {
        let store = store();
        let first = store.create_with_custom_id("alice");
        assert_eq!(store.create_with_custom_id("alice"), first);
        assert_ne!(store.create_with_custom_id("bob"), first);
        assert_eq!(
            store.summary(&first).unwrap().custom_id.as_deref(),
            Some("alice")
        );
        assert_eq!(store.summaries().len(), 2);
    }

    #[test]
    fn a_deleted_identity_gives_its_custom_id_up() {
        let store = store();
        let first = store.create_with_custom_id("alice");
        store.delete(&first).unwrap();
        let second = store.create_with_custom_id("alice");
        assert_ne!(second, first);
        assert_eq!(store.create_with_custom_id("alice"), second);
        // The deleted one keeps its customId in the listing.
        assert_eq!(
            store.summary(&first).unwrap().custom_id.as_deref(),
            Some("alice")
        );
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
