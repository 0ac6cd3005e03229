//! HTTP routes of the public listener.

pub mod beacon;
pub mod health;
pub mod recent;

use crate::intake::Intake;
use crate::recent::Recent;
use std::sync::Arc;
use storage::embedded::WriterHealth;

/// State shared by the collector's own handlers.
#[derive(Clone)]
pub struct AppState {
    /// The queue to the store.
    pub intake: Intake,
    /// Recent samples per site.
    pub recent: Arc<Recent>,
    /// The store writer's health.
    pub writer: Arc<WriterHealth>,
}
