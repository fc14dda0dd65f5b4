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

#[cfg(test)]
mod tests {
    use super::*;
    use natgw_policy_sdk::{Ipv4Addr, Protocol};

    fn from(src: [u8; 4]) -> Flow {
        Flow {
            protocol: Protocol::Tcp,
            src: Ipv4Addr::from(src).into(),
            src_port: 1,
            dst: Ipv4Addr::new(203, 0, 113, 80).into(),
            dst_port: 80,
            ingress: 0,
        }
    }

    #[test]
    fn subnet_to_pool() {
        let mut p = SubnetPools::init(
            "default_pool = \"shared\"\n[[subnet]]\ncidr = \"10.10.1.0/24\"\npool = \"a\"\n[[subnet]]\ncidr = \"10.10.0.0/16\"\npool = \"b\"\nport_budget = 9\n",
        )
        .unwrap();
        assert_eq!(p.select(&from([10, 10, 1, 5])), Some(Selection { pool: "a".into(), port_budget: None }));
        assert_eq!(p.select(&from([10, 10, 2, 5])), Some(Selection { pool: "b".into(), port_budget: Some(9) }));
        assert_eq!(p.select(&from([192, 168, 0, 1])), Some(Selection { pool: "shared".into(), port_budget: None }));
        assert_eq!(SubnetPools::init("").unwrap().select(&from([10, 0, 0, 1])), None);
        assert!(SubnetPools::init("[[subnet]]\ncidr = \"10.0.0.0/40\"\npool = \"a\"\n")
            .err()
            .unwrap()
            .contains("subnet[0].cidr"));
    }
}
