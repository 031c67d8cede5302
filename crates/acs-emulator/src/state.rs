//! The emulated resource's identities: which exist, which were deleted, and how many tokens
//! and revocations each has seen. In memory, behind one mutex held only for map updates; with
//! `--data-dir`, every change is also appended to a journal ([`super::persist`]) under that
//! mutex before it is made, and replayed at start through the same [`Inner::apply`].
//!
//! Tokens themselves are not stored: each carries a sequence number (`seq`), and a revocation
//! records the next sequence number, so "issued before the revoke" is one comparison and the
//! memory per identity stays constant however many tokens it gets. The 2020 preview's
//! `tokensValidFrom` revokes by issue time instead (whole seconds, the tokens' `iat`).
//!
//! An identity may carry a `customId` (preview api-versions): creating with a `customId` that a
//! live identity already has returns that identity instead of a new one.
//!
//! The resource's `/access` assignments ([`super::access`]) live here too, under the same lock
//! and journal: they are the resource's state as much as its identities are.

use super::access::{EntraAssignment, TeamsExtensionAssignment};
use super::persist::{Event, Journal, JournalError, Loaded, Snapshot};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a store operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The emulator answers 404 for ids it never created and for deleted ones alike.
    #[error("identity not found")]
    NotFound,
    /// `--data-dir`: the change could not be written, so it was not made.
    #[error("the emulator could not save its state")]
    NotSaved,
}

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
    /// Tokens whose `iat` (whole seconds) is lower are revoked (`tokensValidFrom` of
    /// 2020-07-20-preview2); 0: none.
    valid_from: i64,
}

/// Token sequence numbers count from `epoch << EPOCH_SHIFT`: every start of a persistent
/// emulator has a higher epoch, so tokens issued after a restart order after every
/// revocation made before it, without a write per token.
const EPOCH_SHIFT: u32 = 40;

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
    /// Teams Phone extension assignments by (tenant id, object id), ids lowercased.
    teams_extension: BTreeMap<(String, String), TeamsExtensionAssignment>,
    /// Entra ID assignments by object id, lowercased: listed in this order.
    entra: BTreeMap<String, EntraAssignment>,
}

/// Whether a create-or-replace made something new (201) or replaced what was there (200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Created,
    Replaced,
}

/// Entra ids are GUIDs, which compare without regard to case.
fn key_of(tenant_id: &str, object_id: &str) -> (String, String) {
    (
        tenant_id.to_ascii_lowercase(),
        object_id.to_ascii_lowercase(),
    )
}

/// The identities of one emulated ACS resource.
#[derive(Debug)]
pub struct IdentityStore {
    resource_id: String,
    inner: Mutex<Inner>,
    /// `--data-dir`: every change is appended here before it is made in memory.
    journal: Option<Journal>,
}

impl IdentityStore {
    /// A memory-only store.
    pub fn new(resource_id: String) -> Self {
        Self {
            resource_id,
            inner: Mutex::new(Inner::default()),
            journal: None,
        }
    }

    /// A store that keeps its state in a journal: what was loaded from it, replayed.
    pub fn with_journal(loaded: Loaded) -> Result<Self, JournalError> {
        let mut inner = Inner {
            next_seq: loaded.epoch << EPOCH_SHIFT,
            ..Inner::default()
        };
        for (line, event) in loaded.events {
            inner
                .apply(event)
                .map_err(|reason| JournalError::corrupt(&loaded.path, line, reason))?;
        }
        let store = Self {
            resource_id: loaded.resource_id,
            inner: Mutex::new(inner),
            journal: Some(loaded.journal),
        };
        // Rewrite the journal as one snapshot per identity, so it does not grow across runs.
        let snapshots = store.lock().snapshots();
        if let Some(journal) = &store.journal {
            journal.compact(&snapshots)?;
        }
        Ok(store)
    }

    /// The immutable id of the emulated resource: the first GUID of every identity id.
    pub fn resource_id(&self) -> &str {
        &self.resource_id
    }

    /// Creates an identity with a fresh id `8:acs:<resource>_<uuid>`.
    pub fn create(&self) -> Result<String, StoreError> {
        let mut inner = self.lock();
        let id = self.fresh_id(&inner);
        self.record(
            &mut inner,
            Event::Create {
                id: id.clone(),
                custom_id: None,
            },
        )?;
        Ok(id)
    }

    /// The live identity with this `customId`, or a new one that gets it. One lock for both,
    /// so concurrent creates with the same `customId` agree on one identity.
    pub fn create_with_custom_id(&self, custom_id: &str) -> Result<String, StoreError> {
        let mut inner = self.lock();
        if let Some(id) = inner.by_custom_id.get(custom_id) {
            return Ok(id.clone());
        }
        let id = self.fresh_id(&inner);
        let event = Event::Create {
            id: id.clone(),
            custom_id: Some(custom_id.to_string()),
        };
        self.record(&mut inner, event)?;
        Ok(id)
    }

    fn fresh_id(&self, inner: &Inner) -> String {
        loop {
            let candidate = format!("8:acs:{}_{}", self.resource_id, random_uuid());
            if !inner.identities.contains_key(&candidate) {
                return candidate;
            }
        }
    }

    /// Counts a token for a live identity, issued `at`, and returns its sequence number.
    /// Journaled without waiting for the disk: a token needs no durability of its own (its
    /// sequence number orders it after every earlier revocation whatever happens).
    pub fn issue_token(&self, id: &str, at: SystemTime) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        live(&mut inner, id)?;
        let seq = inner.next_seq;
        let event = Event::Token {
            id: id.to_string(),
            at_ns: unix_nanos(at),
        };
        self.record(&mut inner, event)?;
        Ok(seq)
    }

    /// Revokes every token issued to the identity so far.
    pub fn revoke(&self, id: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        live(&mut inner, id)?;
        let below = inner.next_seq;
        self.record(
            &mut inner,
            Event::Revoke {
                id: id.to_string(),
                below,
                from: None,
            },
        )
    }

    /// Revokes the tokens issued before `from` (whole seconds); a time not in the past
    /// revokes every token issued so far.
    pub fn revoke_issued_before(
        &self,
        id: &str,
        from: SystemTime,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        live(&mut inner, id)?;
        let event = if from >= now {
            Event::Revoke {
                id: id.to_string(),
                below: inner.next_seq,
                from: None,
            }
        } else {
            let secs = i64::try_from(unix_nanos(from) / 1_000_000_000).unwrap_or(i64::MAX);
            Event::Revoke {
                id: id.to_string(),
                below: 0,
                from: Some(secs),
            }
        };
        self.record(&mut inner, event)
    }

    /// Deletes the identity: its tokens die and the id answers 404 from now on.
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        live(&mut inner, id)?;
        self.record(&mut inner, Event::Delete { id: id.to_string() })
    }

    /// Creates or replaces a Teams Phone extension assignment.
    pub fn put_teams_extension(
        &self,
        assignment: TeamsExtensionAssignment,
    ) -> Result<Upsert, StoreError> {
        let mut inner = self.lock();
        let key = key_of(&assignment.tenant_id, &assignment.object_id);
        let upsert = if inner.teams_extension.contains_key(&key) {
            Upsert::Replaced
        } else {
            Upsert::Created
        };
        self.record(&mut inner, Event::TeamsExtensionAssign(assignment))?;
        Ok(upsert)
    }

    /// The Teams Phone extension assignment of an object of a tenant.
    pub fn teams_extension(
        &self,
        tenant_id: &str,
        object_id: &str,
    ) -> Option<TeamsExtensionAssignment> {
        let inner = self.lock();
        inner
            .teams_extension
            .get(&key_of(tenant_id, object_id))
            .cloned()
    }

    /// Removes a Teams Phone extension assignment; `NotFound` when there is none.
    pub fn delete_teams_extension(
        &self,
        tenant_id: &str,
        object_id: &str,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if !inner
            .teams_extension
            .contains_key(&key_of(tenant_id, object_id))
        {
            return Err(StoreError::NotFound);
        }
        let event = Event::TeamsExtensionUnassign {
            tenant_id: tenant_id.to_string(),
            object_id: object_id.to_string(),
        };
        self.record(&mut inner, event)
    }

    /// Creates or replaces an Entra ID assignment.
    pub fn put_entra(&self, assignment: EntraAssignment) -> Result<Upsert, StoreError> {
        let mut inner = self.lock();
        let upsert = if inner
            .entra
            .contains_key(&assignment.object_id.to_ascii_lowercase())
        {
            Upsert::Replaced
        } else {
            Upsert::Created
        };
        self.record(&mut inner, Event::EntraAssign(assignment))?;
        Ok(upsert)
    }

    /// The Entra ID assignment of an object.
    pub fn entra(&self, object_id: &str) -> Option<EntraAssignment> {
        self.lock()
            .entra
            .get(&object_id.to_ascii_lowercase())
            .cloned()
    }

    /// Removes an Entra ID assignment; `NotFound` when there is none.
    pub fn delete_entra(&self, object_id: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if !inner.entra.contains_key(&object_id.to_ascii_lowercase()) {
            return Err(StoreError::NotFound);
        }
        let event = Event::EntraUnassign {
            object_id: object_id.to_string(),
        };
        self.record(&mut inner, event)
    }

    /// Makes every change of a PATCH (`None` removes; removing what is not there is no
    /// change) under one lock, and returns the assignments it set.
    pub fn patch_entra(
        &self,
        changes: Vec<(String, Option<EntraAssignment>)>,
    ) -> Result<Vec<EntraAssignment>, StoreError> {
        let mut inner = self.lock();
        let mut set = Vec::new();
        for (object_id, change) in changes {
            match change {
                Some(assignment) => {
                    set.push(assignment.clone());
                    self.record(&mut inner, Event::EntraAssign(assignment))?;
                }
                None if inner.entra.contains_key(&object_id.to_ascii_lowercase()) => {
                    self.record(&mut inner, Event::EntraUnassign { object_id })?;
                }
                None => {}
            }
        }
        Ok(set)
    }

    /// Up to `limit` Entra ID assignments after the object id `after` (none: from the
    /// first), in object id order, and the object id to continue after when more remain.
    pub fn entra_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<EntraAssignment>, Option<String>) {
        use std::ops::Bound;
        let inner = self.lock();
        let start = after.map_or(Bound::Unbounded, |after| {
            Bound::Excluded(after.to_ascii_lowercase())
        });
        let mut rest = inner.entra.range((start, Bound::Unbounded));
        let page: Vec<EntraAssignment> =
            rest.by_ref().take(limit).map(|(_, a)| a.clone()).collect();
        let next = rest
            .next()
            .and(page.last())
            .map(|last| last.object_id.to_ascii_lowercase());
        (page, next)
    }

    /// The Entra ID assignments of a tenant: those an exchange of its users is checked against.
    pub fn entra_in_tenant(&self, tenant_id: &str) -> Vec<EntraAssignment> {
        self.lock()
            .entra
            .values()
            .filter(|a| a.tenant_id.eq_ignore_ascii_case(tenant_id))
            .cloned()
            .collect()
    }

    /// Journals `event` (when persistent), then applies it. Refused when the write fails: the
    /// memory never holds what the journal lacks.
    fn record(&self, inner: &mut Inner, event: Event) -> Result<(), StoreError> {
        if let Some(journal) = &self.journal {
            journal.append(&event).map_err(|()| StoreError::NotSaved)?;
        }
        // Checked by the caller under the same lock: applying cannot fail here.
        inner.apply(event).map_err(|_| StoreError::NotFound)
    }

    /// Waits until every change made so far is on disk (a no-op without a journal). Each
    /// changing operation calls it before it is acknowledged.
    pub async fn durable(&self) -> Result<(), StoreError> {
        match &self.journal {
            Some(journal) => journal.sync().await.map_err(|()| StoreError::NotSaved),
            None => Ok(()),
        }
    }

    /// `iat` is the token's issue time in whole seconds.
    pub fn standing(&self, id: &str, seq: u64, iat: i64) -> Standing {
        let inner = self.lock();
        match inner.identities.get(id) {
            None => Standing::Unknown,
            Some(record) if record.deleted => Standing::Deleted,
            Some(record) if seq < record.revoked_below || iat < record.valid_from => {
                Standing::Revoked
            }
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

impl Inner {
    /// The one place a change is made, live or replayed from the journal. An event that does
    /// not fit the state (a token for an unknown identity, an id created twice) is refused.
    fn apply(&mut self, event: Event) -> Result<(), &'static str> {
        match event {
            Event::Create { id, custom_id } => {
                if self.identities.contains_key(&id) {
                    return Err("an identity is created twice");
                }
                self.insert(
                    id,
                    Record {
                        custom_id,
                        ..Record::default()
                    },
                );
            }
            Event::Token { id, at_ns } => {
                let seq = self.next_seq;
                let record = self.live_mut(&id)?;
                record.tokens_issued += 1;
                record.last_token_issued_at = Some(from_unix_nanos(at_ns));
                self.next_seq = seq + 1;
            }
            Event::Revoke { id, below, from } => {
                let record = self.live_mut(&id)?;
                record.revocations += 1;
                record.revoked_below = record.revoked_below.max(below);
                if let Some(from) = from {
                    record.valid_from = record.valid_from.max(from);
                }
            }
            Event::Delete { id } => {
                let record = self.live_mut(&id)?;
                record.deleted = true;
                if let Some(custom_id) = record.custom_id.clone() {
                    self.by_custom_id.remove(&custom_id);
                }
            }
            Event::Snapshot(snapshot) => {
                if self.identities.contains_key(&snapshot.id) {
                    return Err("an identity is listed twice");
                }
                let record = Record {
                    order: 0,
                    custom_id: snapshot.custom_id,
                    last_token_issued_at: snapshot.last_token_issued_at_ns.map(from_unix_nanos),
                    deleted: snapshot.deleted,
                    tokens_issued: snapshot.tokens_issued,
                    revocations: snapshot.revocations,
                    revoked_below: snapshot.revoked_below,
                    valid_from: snapshot.valid_from,
                };
                self.insert(snapshot.id, record);
            }
            Event::TeamsExtensionAssign(assignment) => {
                let key = key_of(&assignment.tenant_id, &assignment.object_id);
                self.teams_extension.insert(key, assignment);
            }
            Event::TeamsExtensionUnassign {
                tenant_id,
                object_id,
            } => {
                self.teams_extension
                    .remove(&key_of(&tenant_id, &object_id))
                    .ok_or("an assignment that does not exist is removed")?;
            }
            Event::EntraAssign(assignment) => {
                self.entra
                    .insert(assignment.object_id.to_ascii_lowercase(), assignment);
            }
            Event::EntraUnassign { object_id } => {
                self.entra
                    .remove(&object_id.to_ascii_lowercase())
                    .ok_or("an assignment that does not exist is removed")?;
            }
        }
        Ok(())
    }

    fn insert(&mut self, id: String, mut record: Record) {
        self.created += 1;
        record.order = self.created;
        self.by_order.insert(record.order, id.clone());
        if let (Some(custom_id), false) = (&record.custom_id, record.deleted) {
            self.by_custom_id.insert(custom_id.clone(), id.clone());
        }
        self.identities.insert(id, record);
    }

    fn live_mut(&mut self, id: &str) -> Result<&mut Record, &'static str> {
        live(self, id).map_err(|_| "a change names an identity that is not live")
    }

    /// The whole state, oldest identity first, then the assignments, as the journal's
    /// compacted form.
    fn snapshots(&self) -> Vec<Event> {
        let assignments = self
            .teams_extension
            .values()
            .cloned()
            .map(Event::TeamsExtensionAssign)
            .chain(self.entra.values().cloned().map(Event::EntraAssign));
        self.by_order
            .values()
            .filter_map(|id| self.identities.get(id).map(|record| (id, record)))
            .map(|(id, record)| {
                Event::Snapshot(Snapshot {
                    id: id.clone(),
                    custom_id: record.custom_id.clone(),
                    deleted: record.deleted,
                    tokens_issued: record.tokens_issued,
                    revocations: record.revocations,
                    revoked_below: record.revoked_below,
                    valid_from: record.valid_from,
                    last_token_issued_at_ns: record.last_token_issued_at.map(unix_nanos),
                })
            })
            .chain(assignments)
            .collect()
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

fn live<'a>(inner: &'a mut Inner, id: &str) -> Result<&'a mut Record, StoreError> {
    inner
        .identities
        .get_mut(id)
        .filter(|record| !record.deleted)
        .ok_or(StoreError::NotFound)
}

/// Nanoseconds since the Unix epoch (0 before it, saturating far in the future).
fn unix_nanos(at: SystemTime) -> u64 {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

fn from_unix_nanos(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
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
        let id = store.create().unwrap();
        let suffix = id
            .strip_prefix(&format!("8:acs:{RESOURCE}_"))
            .expect("resource prefix");
        let groups: Vec<usize> = suffix.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_ne!(store.create().unwrap(), id);
    }

    #[test]
    fn revoke_kills_earlier_tokens_only() {
        let store = store();
        let id = store.create().unwrap();
        let before = store.issue_token(&id, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(store.standing(&id, before, 0), Standing::Active);
        store.revoke(&id).unwrap();
        let after = store.issue_token(&id, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(store.standing(&id, before, 0), Standing::Revoked);
        assert_eq!(store.standing(&id, after, 0), Standing::Active);
    }

    #[test]
    fn another_identitys_revoke_does_not_touch_mine() {
        let store = store();
        let (mine, theirs) = (store.create().unwrap(), store.create().unwrap());
        let token = store.issue_token(&mine, SystemTime::UNIX_EPOCH).unwrap();
        store.revoke(&theirs).unwrap();
        assert_eq!(store.standing(&mine, token, 0), Standing::Active);
    }

    #[test]
    fn delete_is_final() {
        let store = store();
        let id = store.create().unwrap();
        let token = store.issue_token(&id, SystemTime::UNIX_EPOCH).unwrap();
        store.delete(&id).unwrap();
        assert_eq!(store.standing(&id, token, 0), Standing::Deleted);
        assert_eq!(
            store.issue_token(&id, SystemTime::UNIX_EPOCH),
            Err(StoreError::NotFound)
        );
        assert_eq!(store.revoke(&id), Err(StoreError::NotFound));
        assert_eq!(store.delete(&id), Err(StoreError::NotFound));
    }

    #[test]
    fn unknown_ids_are_not_found() {
        let store = store();
        assert_eq!(
            store.issue_token("8:acs:nope", SystemTime::UNIX_EPOCH),
            Err(StoreError::NotFound)
        );
        assert_eq!(store.standing("8:acs:nope", 0, 0), Standing::Unknown);
    }

    #[test]
    fn summaries_count_and_keep_creation_order() {
        let store = store();
        let ids: Vec<String> = (0..5).map(|_| store.create().unwrap()).collect();
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
        let ids: Vec<String> = (0..7).map(|_| store.create().unwrap()).collect();
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
        let first = store.create_with_custom_id("alice").unwrap();
        assert_eq!(store.create_with_custom_id("alice").unwrap(), first);
        assert_ne!(store.create_with_custom_id("bob").unwrap(), first);
        assert_eq!(
            store.summary(&first).unwrap().custom_id.as_deref(),
            Some("alice")
        );
        assert_eq!(store.summaries().len(), 2);
    }

    #[test]
    fn a_deleted_identity_gives_its_custom_id_up() {
        let store = store();
        let first = store.create_with_custom_id("alice").unwrap();
        store.delete(&first).unwrap();
        let second = store.create_with_custom_id("alice").unwrap();
        assert_ne!(second, first);
        assert_eq!(store.create_with_custom_id("alice").unwrap(), second);
        // The deleted one keeps its customId in the listing.
        assert_eq!(
            store.summary(&first).unwrap().custom_id.as_deref(),
            Some("alice")
        );
    }

    fn reopen(dir: &std::path::Path) -> IdentityStore {
        let loaded = super::super::persist::open(dir, None, || RESOURCE.into()).unwrap();
        IdentityStore::with_journal(loaded).unwrap()
    }

    #[test]
    fn a_journaled_store_comes_back_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let store = reopen(dir.path());
        let alice = store.create_with_custom_id("alice").unwrap();
        let bob = store.create().unwrap();
        let early = store.issue_token(&alice, at).unwrap();
        store.revoke(&alice).unwrap();
        let late = store.issue_token(&alice, at).unwrap();
        let bobs = store.issue_token(&bob, at).unwrap();
        store.delete(&bob).unwrap();
        let before = store.summaries();
        drop(store);

        let store = reopen(dir.path());
        assert_eq!(store.summaries(), before);
        assert_eq!(store.standing(&alice, early, 0), Standing::Revoked);
        assert_eq!(store.standing(&alice, late, 0), Standing::Active);
        assert_eq!(store.standing(&bob, bobs, 0), Standing::Deleted);
        assert_eq!(store.create_with_custom_id("alice").unwrap(), alice);
        // A token of the new run orders after everything of the old one: a revoke now covers
        // the old run's tokens and the new one, and a token after that is valid.
        let fresh = store.issue_token(&alice, at).unwrap();
        assert!(fresh > late);
        store.revoke(&alice).unwrap();
        assert_eq!(store.standing(&alice, late, 0), Standing::Revoked);
        assert_eq!(store.standing(&alice, fresh, 0), Standing::Revoked);
        let after = store.issue_token(&alice, at).unwrap();
        assert_eq!(store.standing(&alice, after, 0), Standing::Active);
        drop(store);
        // And once more: compaction kept it all.
        let store = reopen(dir.path());
        assert_eq!(store.standing(&alice, after, 0), Standing::Active);
        assert_eq!(store.standing(&alice, fresh, 0), Standing::Revoked);
        assert_eq!(store.summary(&alice).unwrap().revocations, 2);
        assert_eq!(store.summary(&alice).unwrap().tokens_issued, 4);
        // The compacted journal has no token lines: the epoch alone keeps new tokens valid.
        let newest = store.issue_token(&alice, at).unwrap();
        assert_eq!(store.standing(&alice, newest, 0), Standing::Active);
    }

    #[test]
    fn teams_extension_assignments_upsert_delete_and_survive_a_restart() {
        use super::super::access::{TeamsExtensionAssignment, TeamsExtensionPrincipal};
        let assignment = |object: &str, clients: Option<Vec<String>>| TeamsExtensionAssignment {
            object_id: object.into(),
            tenant_id: "T".into(),
            principal_type: TeamsExtensionPrincipal::User,
            client_ids: clients,
        };
        let dir = tempfile::tempdir().unwrap();
        let mut store = reopen(dir.path());
        assert_eq!(
            store.put_teams_extension(assignment("a", None)),
            Ok(Upsert::Created)
        );
        let replaced = assignment("a", Some(vec!["c".into()]));
        assert_eq!(
            store.put_teams_extension(replaced.clone()),
            Ok(Upsert::Replaced)
        );
        assert_eq!(
            store.put_teams_extension(assignment("b", None)),
            Ok(Upsert::Created)
        );
        // Ids are GUIDs: another case names the same assignment.
        assert_eq!(store.teams_extension("t", "A"), Some(replaced.clone()));
        assert_eq!(store.delete_teams_extension("T", "b"), Ok(()));
        assert_eq!(
            store.delete_teams_extension("T", "b"),
            Err(StoreError::NotFound)
        );
        assert_eq!(store.teams_extension("T", "b"), None);
        // Twice: the first start replays the changes, the second reads what compaction wrote.
        for _ in 0..2 {
            drop(store);
            store = reopen(dir.path());
            assert_eq!(store.teams_extension("T", "a"), Some(replaced.clone()));
            assert_eq!(store.teams_extension("T", "b"), None);
        }
    }

    #[test]
    fn entra_assignments_page_patch_and_survive_a_restart() {
        use super::super::access::{EntraAssignment, EntraPrincipal};
        let assignment = |object: &str| EntraAssignment {
            object_id: object.into(),
            tenant_id: "T".into(),
            principal_type: EntraPrincipal::User,
            client_ids: vec![],
        };
        let dir = tempfile::tempdir().unwrap();
        let mut store = reopen(dir.path());
        assert_eq!(store.put_entra(assignment("c")), Ok(Upsert::Created));
        assert_eq!(store.put_entra(assignment("C")), Ok(Upsert::Replaced));
        let set = store
            .patch_entra(vec![
                ("a".into(), Some(assignment("a"))),
                ("b".into(), Some(assignment("b"))),
                ("c".into(), None),
                ("never".into(), None),
            ])
            .unwrap();
        assert_eq!(set, vec![assignment("a"), assignment("b")]);
        assert_eq!(store.put_entra(assignment("d")), Ok(Upsert::Created));
        assert_eq!(store.delete_entra("d"), Ok(()));
        assert_eq!(store.delete_entra("d"), Err(StoreError::NotFound));
        for _ in 0..2 {
            drop(store);
            store = reopen(dir.path());
            let (first, next) = store.entra_page(None, 1);
            assert_eq!(
                (first, next.clone()),
                (vec![assignment("a")], Some("a".into()))
            );
            let (second, next) = store.entra_page(next.as_deref(), 1);
            assert_eq!((second, next), (vec![assignment("b")], None));
            assert_eq!(store.entra("C"), None);
            assert_eq!(store.entra_in_tenant("t").len(), 2);
        }
    }

    #[test]
    fn revoking_before_a_past_time_spares_later_tokens() {
        let store = store();
        let id = store.create().unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let old = store.issue_token(&id, t0).unwrap();
        let new = store
            .issue_token(&id, t0 + Duration::from_secs(60))
            .unwrap();
        store
            .revoke_issued_before(
                &id,
                t0 + Duration::from_secs(30),
                t0 + Duration::from_secs(90),
            )
            .unwrap();
        assert_eq!(store.standing(&id, old, 1_795_000_000), Standing::Revoked);
        assert_eq!(store.standing(&id, new, 1_795_000_060), Standing::Active);
        // A time not in the past revokes everything so far, whatever its second.
        store.revoke_issued_before(&id, t0, t0).unwrap();
        assert_eq!(store.standing(&id, new, 1_795_000_060), Standing::Revoked);
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
