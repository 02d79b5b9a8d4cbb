//! Node readiness: its session store answers, its consumer is positioned on every partition
//! and a broker answers, and it is not draining. Each check is bounded so that `/readyz`
//! answers within about a second even while a dependency hangs.

use std::time::Duration;

use crate::Node;

/// How long the session store may take to answer a readiness ping.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

impl Node {
    /// Why the node is not ready; empty when it is.
    pub async fn not_ready_reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if self.shutdown.is_cancelled() {
            reasons.push("draining".to_owned());
        }
        if let Some(why) = self.deps.bus.not_ready_reason() {
            reasons.push(why);
        }
        match tokio::time::timeout(CHECK_TIMEOUT, self.deps.sessions.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => reasons.push(format!("session store: {e}")),
            Err(_) => reasons.push(format!("session store: no answer within {CHECK_TIMEOUT:?}")),
        }
        reasons
    }
}
