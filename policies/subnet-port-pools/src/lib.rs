//! subnet-port-pools: each inside subnet leaves from its own pool of external addresses
//! and ports (pools are defined in the gateway config), optionally with a per-source port
//! budget. The first matching subnet wins; unmatched sources use `default_pool` (or the
//! gateway's default pool when it is not set).
//!
//! ```toml
//! default_pool = "shared"     # optional
//!
//! [[subnet]]
//! cidr = "10.10.1.0/24"
//! pool = "pool-a"
//! port_budget = 2000          # optional: concurrent ports per inside address
//! ```

use natgw_policy_sdk::{export_policy, parse_toml, Cidr, Flow, Policy, PortPool, Selection};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    default_pool: Option<String>,
    #[serde(default)]
    subnet: Vec<RawSubnet>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubnet {
    cidr: String,
    pool: String,
    port_budget: Option<u32>,
}

pub struct SubnetPools {
    subnets: Vec<(Cidr, Selection)>,
    default: Option<Selection>,
}

impl Policy for SubnetPools {
    fn init(config: &str) -> Result<Self, String> {
        let raw: RawConfig = parse_toml(config)?;
        let mut subnets = Vec::new();
        for (i, s) in raw.subnet.into_iter().enumerate() {
            let cidr = Cidr::parse(&s.cidr).map_err(|e| format!("subnet[{i}].cidr: {e}"))?;
            if s.pool.is_empty() {
                return Err(format!("subnet[{i}].pool: must name a pool of the gateway config"));
            }
            subnets.push((cidr, Selection { pool: s.pool, port_budget: s.port_budget }));
        }
        let default = raw.default_pool.map(|pool| Selection { pool, port_budget: None });
        Ok(SubnetPools { subnets, default })
    }
}

impl PortPool for SubnetPools {
    fn select(&mut self, f: &Flow) -> Option<Selection> {
        self.subnets.iter().find(|(c, _)| c.contains(f.src)).map(|(_, s)| s.clone()).or_else(|| self.default.clone())
    }
}

export_policy!(SubnetPools: port_pool);
