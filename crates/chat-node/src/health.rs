//! Node readiness: its session store answers, its consumer is positioned on every partition,
//! and it is not draining.

use crate::Node;

impl Node {
    /// Why the node is not ready; empty when it is.
    pub async fn not_ready_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.shutdown.is_cancelled() {
            reasons.push("draining".to_owned());
        }
        if !self.deps.bus.is_ready() {
            reasons.push("bus consumer not positioned".to_owned());
        }
        if let Err(e) = self.deps.sessions.ping().await {
            reasons.push(format!("session store: {e}"));
        }
        reasons
    }
}
