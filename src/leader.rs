//! Leader election on a coordination.k8s.io Lease, so that of several replicas only one
//! reconciles. A replica that loses the lease stops at once (the process exits and is
//! restarted as a candidate): two leaders must never issue tokens side by side.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use tracing::{error, info};

/// Where this replica stands, for `/readyz`: starting (0), standby or leader.
#[derive(Debug, Default)]
pub struct Role(AtomicU8);

impl Role {
    const STANDBY: u8 = 1;
    const LEADER: u8 = 2;

    pub fn describe(&self) -> &'static str {
        match self.0.load(Ordering::Relaxed) {
            Self::STANDBY => "standby",
            Self::LEADER => "leader",
            _ => "starting",
        }
    }

    pub fn is_standby(&self) -> bool {
        self.0.load(Ordering::Relaxed) == Self::STANDBY
    }

    fn set(&self, role: u8) {
        self.0.store(role, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's name in the Lease (the pod name).
    pub identity: String,
    /// A leader that has not renewed for this long is replaced.
    pub duration_seconds: u64,
    /// How long before the end of `duration_seconds` the leader renews.
    pub grace_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader lease")]
    Lost,
}

/// Waits for the lease, then runs `work` while holding it. Returns when `work` ends, or with
/// [`LeaderError::Lost`] as soon as the lease is lost.
pub async fn run_as_leader<F: Future<Output = ()>>(
    client: Client,
    settings: LeaseSettings,
    role: Arc<Role>,
    work: F,
) -> Result<(), LeaderError> {
    let manager = LeaseManagerBuilder::new(client, &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration_seconds)
        .with_grace(settings.grace_seconds)
        .build()
        .await?;
    let (mut leading, _task) = manager.watch().await;
    role.set(Role::STANDBY);
    info!(lease = %settings.name, identity = %settings.identity, "standing by for the leader lease");
    while !*leading.borrow_and_update() {
        if leading.changed().await.is_err() {
            return Err(LeaderError::Lost);
        }
    }
    role.set(Role::LEADER);
    info!(lease = %settings.name, "became leader");
    let lost = async {
        loop {
            if leading.changed().await.is_err() || !*leading.borrow_and_update() {
                return;
            }
        }
    };
    tokio::select! {
        () = work => Ok(()),
        () = lost => {
            error!(lease = %settings.name, "lost the leader lease; stopping");
            Err(LeaderError::Lost)
        }
    }
}
