//! Per-site policy: which sites and origins may send beacons, sampling ceilings, per-client rate limits, bot
//! filtering, trusted proxies and query tokens — read from a TOML file (`--config`), reloadable on SIGHUP.

pub mod bots;
pub mod client_ip;
pub mod file;
pub mod rate_limit;
pub mod user_agent;

pub use file::{Policy, PolicyError};

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// The current policy, swapped whole on reload so a request sees one consistent version.
#[derive(Clone)]
pub struct PolicyHandle {
    current: Arc<RwLock<Arc<Policy>>>,
    path: Option<PathBuf>,
}

impl PolicyHandle {
    /// Loads the file (or the permissive default without one).
    pub fn load(path: Option<PathBuf>) -> Result<PolicyHandle, PolicyError> {
        let policy = match &path {
            Some(p) => Policy::from_file(p)?,
            None => Policy::default(),
        };
        Ok(PolicyHandle {
            current: Arc::new(RwLock::new(Arc::new(policy))),
            path,
        })
    }

    /// The policy in force.
    pub fn get(&self) -> Arc<Policy> {
        self.current.read().expect("policy lock").clone()
    }

    /// Re-reads the file; on error the old policy stays in force and the error is returned.
    pub fn reload(&self) -> Result<(), PolicyError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let fresh = Policy::from_file(path)?;
        *self.current.write().expect("policy lock") = Arc::new(fresh);
        Ok(())
    }

    /// Reloads on every SIGHUP until the process ends.
    pub fn reload_on_sighup(&self) {
        #[cfg(unix)]
        {
            let handle = self.clone();
            tokio::spawn(async move {
                let Ok(mut hup) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                else {
                    tracing::warn!("cannot listen for SIGHUP; policy reload disabled");
                    return;
                };
                while hup.recv().await.is_some() {
                    match handle.reload() {
                        Ok(()) => tracing::info!("policy reloaded"),
                        Err(e) => {
                            tracing::error!(error = %e, "policy reload failed; keeping the previous policy")
                        }
                    }
                }
            });
        }
    }
}
