//! Gateway configs for tests: the demo's `examples/demo/natgw.toml`, with its paths made
//! absolute and its state moved into the topology's directory, plus per-test overrides.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    table: Table,
}

impl GatewayConfig {
    /// The demo config, with state (admin socket, flow log) under `dir`.
    pub fn demo(dir: &Path) -> GatewayConfig {
        let root = crate::root();
        let demo = root.join("examples/demo");
        let text = std::fs::read_to_string(demo.join("natgw.toml")).expect("examples/demo/natgw.toml");
        let mut table: Table = text.parse().expect("the demo config is TOML");
        let mut c = GatewayConfig { table: Table::new() };
        // Relative paths are relative to the demo config's directory.
        if let Some(Value::Table(policy)) = table.get_mut("policy") {
            for hook in ["egress", "port_pool", "flow_log"] {
                if let Some(Value::Table(h)) = policy.get_mut(hook) {
                    for key in ["component", "config"] {
                        if let Some(Value::String(p)) = h.get_mut(key) {
                            *p = absolute(&demo, p).display().to_string();
                        }
                    }
                }
            }
        }
        c.table = table;
        c.set("admin.socket", dir.join("admin.sock").display().to_string());
        c.set("flow_log.file", dir.join("flows.jsonl").display().to_string());
        c
    }

    /// Sets `section.key` (dotted: `otlp.endpoint`, `timeouts.udp`, `policy.egress.config`).
    pub fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().expect("a key");
        let mut t = &mut self.table;
        for p in parts {
            t = t
                .entry(p)
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("{key}: {p} is not a table"));
        }
        t.insert(last.into(), value.into());
        self
    }

    /// Removes `section.key` (or a whole section).
    pub fn remove(&mut self, key: &str) -> &mut Self {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().expect("a key");
        let mut t = &mut self.table;
        for p in parts {
            match t.get_mut(p).and_then(Value::as_table_mut) {
                Some(next) => t = next,
                None => return self,
            }
        }
        t.remove(last);
        self
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        let mut v: Option<&Value> = None;
        let mut t = Some(&self.table);
        for p in key.split('.') {
            v = t?.get(p);
            t = v.and_then(Value::as_table);
        }
        v
    }

    pub fn admin_socket(&self) -> String {
        self.get("admin.socket").and_then(Value::as_str).expect("admin.socket is set").to_string()
    }

    pub fn text(&self) -> String {
        toml::to_string(&self.table).expect("a TOML table serializes")
    }

    /// Writes the config to `path` and returns the path.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.text()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path.to_path_buf()
    }
}

fn absolute(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    let joined = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    // `..` components resolved, so that messages show plain paths.
    joined.canonicalize().unwrap_or(joined)
}
