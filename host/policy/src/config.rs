//! What the policy runtime is configured with (the config file's `[policy]` section, as
//! validated by the `natgw` crate), and the names of its hooks and fail modes.

/// What a hook does when its policy fails (trap, deadline, memory cap, invalid answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailMode {
    /// egress: allow the flow; port-pool: use the default pool; flow-log: export the
    /// batch as the gateway produced it.
    Open,
    /// egress: deny the flow; port-pool: drop the flow; flow-log: export nothing from the
    /// batch.
    Closed,
}

impl std::fmt::Display for FailMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        })
    }
}

/// The three places a policy plugs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    Egress,
    PortPool,
    FlowLog,
}

impl Hook {
    pub const ALL: [Hook; 3] = [Hook::Egress, Hook::PortPool, Hook::FlowLog];

    pub fn name(self) -> &'static str {
        match self {
            Hook::Egress => "egress",
            Hook::PortPool => "port-pool",
            Hook::FlowLog => "flow-log",
        }
    }

    pub fn parse(s: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.name() == s || h.name().replace('-', "_") == s)
    }

    /// The default fail mode: an egress allow-list and a flow-log redaction fail closed
    /// (nothing leaves that the policy would have stopped); a pool choice fails open to
    /// the default pool.
    pub fn default_fail(self) -> FailMode {
        match self {
            Hook::Egress | Hook::FlowLog => FailMode::Closed,
            Hook::PortPool => FailMode::Open,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub call_timeout_us: u64,
    pub memory_limit_mb: u64,
    pub cache_dir: Option<std::path::PathBuf>,
    /// Indexed by `Hook::index()`.
    pub hooks: [Option<HookConfig>; 3],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    pub component: std::path::PathBuf,
    pub config: Option<std::path::PathBuf>,
    pub fail: FailMode,
}
