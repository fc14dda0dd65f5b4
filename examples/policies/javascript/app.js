// egress-allowlist in JavaScript: the same rules and config format as the built-in Rust
// policy (policies/egress-allowlist), held to the same behaviour by tests/vectors/egress.toml.
//
//     default = "reject"          # allow | deny | reject (default: deny)
//     [[rule]]
//     action = "allow"
//     dst = "203.0.113.80/32"     # an IPv4 address or CIDR, or any (default: any)
//     protocol = "tcp"            # tcp | udp | icmp | any (default: any)
//     ports = "80"                # a port or range, destination side, or any (default: any)
//     src = "10.10.1.0/24"        # optional: the inside source
//     host = "*.pypi.org"         # optional: a name natgw bound to the destination
//
// Built against natgw:policy@0.2.0: host patterns are registered with the gateway at init
// (names.set-patterns, which refuses what is not a domain name) and matched by it in check
// (names.dst-matches, asked once and only when a host rule is reached).
//
// The config is read by a small TOML reader below (the componentize-js runtime has no TOML
// library): comments, blank lines, `[[rule]]` and `key = "string"` or `key = 'string'`,
// which is all this format uses. Anything else is refused with its line number.
//
// Build: ./build.sh (componentize-js) -> target/policies/egress_allowlist_js.wasm

import { setPatterns, dstMatches } from "natgw:policy/names@0.2.0";

const VERDICTS = ["allow", "deny", "reject"];
const PROTOCOLS = ["tcp", "udp", "icmp"];
const RULE_KEYS = ["action", "dst", "src", "protocol", "ports", "host"];

class ConfigError extends Error {}

// One `key = "value"` or `[[rule]]` per line; returns { default, rule: [{...}] } of strings.
function readToml(text) {
  const top = {};
  const rules = [];
  let table = top;
  const lines = text.split("\n");
  for (let n = 0; n < lines.length; n++) {
    const at = `config: line ${n + 1}`;
    let line = lines[n].replace(/\r$/, "").trim();
    if (line === "" || line.startsWith("#")) continue;
    if (/^\[\[\s*rule\s*\]\]\s*(#.*)?$/.test(line)) {
      table = {};
      rules.push(table);
      continue;
    }
    if (line.startsWith("[")) throw new ConfigError(`${at}: unknown table ${line}, expected [[rule]]`);
    const m = /^([A-Za-z0-9_-]+)\s*=\s*(.*)$/.exec(line);
    if (!m) throw new ConfigError(`${at}: expected key = "value", found ${line}`);
    const [, key, rest] = m;
    if (table === top && key === "rule") throw new ConfigError(`${at}: rule must be an array of tables ([[rule]])`);
    if (table === top && key !== "default")
      throw new ConfigError(`${at}: unknown field \`${key}\`, expected \`default\` or \`rule\``);
    const name = table === top ? key : `rule[${rules.length - 1}].${key}`;
    if (table !== top && !RULE_KEYS.includes(key)) throw new ConfigError(`${at}: ${name}: unknown field \`${key}\``);
    const v = /^(?:"((?:[^"\\]|\\.)*)"|'([^']*)')\s*(#.*)?$/.exec(rest);
    if (!v) throw new ConfigError(`${at}: ${name}: expected a quoted string, found ${rest === "" ? "nothing" : rest}`);
    if (key in table) throw new ConfigError(`${at}: ${name}: duplicate key`);
    table[key] = v[1] !== undefined ? v[1].replace(/\\(["\\])/g, "$1") : v[2];
  }
  return { default: top.default, rule: rules };
}

function verdict(key, s) {
  const v = s.toLowerCase();
  if (!VERDICTS.includes(v)) throw new ConfigError(`${key} = "${s}": must be allow, deny or reject`);
  return v;
}

function ipv4(s) {
  const parts = s.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^[0-9]{1,3}$/.test(p) && (p.length === 1 || p[0] !== "0")))
    return null;
  const o = parts.map(Number);
  if (o.some((x) => x > 255)) return null;
  return ((o[0] << 24) | (o[1] << 16) | (o[2] << 8) | o[3]) >>> 0;
}

// null: any address (IPv4 or IPv6); otherwise { net, mask } of an IPv4 CIDR.
function address(key, s) {
  if (s === undefined || s.trim().toLowerCase() === "any") return null;
  const t = s.trim();
  const slash = t.indexOf("/");
  const addr = ipv4(slash < 0 ? t : t.slice(0, slash));
  if (addr === null) throw new ConfigError(`${key}: "${t}" is not an IPv4 address or CIDR`);
  const p = slash < 0 ? "32" : t.slice(slash + 1);
  if (!/^[0-9]{1,2}$/.test(p) || Number(p) > 32)
    throw new ConfigError(`${key}: "${t}" has a prefix length that is not 0-32`);
  const mask = Number(p) === 0 ? 0 : (0xffffffff << (32 - Number(p))) >>> 0;
  return { net: (addr & mask) >>> 0, mask };
}

function port(s) {
  const t = s.trim();
  return /^[0-9]{1,5}$/.test(t) && Number(t) <= 65535 ? Number(t) : null;
}

function ports(key, s) {
  if (s === undefined || s.trim().toLowerCase() === "any" || s.trim() === "*") return [0, 65535];
  const t = s.trim();
  const dash = t.indexOf("-");
  const lo = port(dash < 0 ? t : t.slice(0, dash));
  const hi = port(dash < 0 ? t : t.slice(dash + 1));
  if (lo === null || hi === null || lo > hi)
    throw new ConfigError(`${key}: "${t}" is not a port or port range like 80 or 1024-65535`);
  return [lo, hi];
}

// Registers host patterns with the gateway, which refuses what is not a domain name.
function register(key, patterns) {
  try {
    setPatterns(patterns);
  } catch (e) {
    throw new ConfigError(`config: ${key}: ${e?.payload ?? e?.message ?? String(e)}`);
  }
}

function parseConfig(text) {
  const raw = readToml(text);
  const patterns = [];
  const def = verdict("default", raw.default ?? "deny");
  const rules = raw.rule.map((r, i) => {
    const at = (k) => `rule[${i}].${k}`;
    if (r.action === undefined) throw new ConfigError(`config: ${at("action")}: missing field \`action\``);
    const proto = (r.protocol ?? "any").toLowerCase();
    if (proto !== "any" && !PROTOCOLS.includes(proto))
      throw new ConfigError(`${at("protocol")} = "${r.protocol}": must be tcp, udp, icmp or any`);
    return {
      action: verdict(at("action"), r.action),
      dst: address(at("dst"), r.dst),
      src: address(at("src"), r.src),
      protocol: proto === "any" ? null : proto,
      ports: ports(at("ports"), r.ports),
      host: host(at("host"), r.host),
    };
  });
  register("rule[].host", patterns);
  return { def, rules };

  // Checked one at a time, so that an error names its rule.
  function host(key, h) {
    if (h === undefined) return null;
    register(key, [h]);
    patterns.push(h);
    return patterns.length - 1;
  }
}

// An IPv4 prefix never contains an IPv6 address.
function contains(cidr, addr) {
  return cidr === null || (addr.tag === "v4" && ((addr.val & cidr.mask) >>> 0) === cidr.net);
}

let config = { def: "deny", rules: [] };

export const lifecycle = {
  init(text) {
    try {
      config = parseConfig(text);
    } catch (e) {
      // A thrown value becomes the `err` of init's result<_, string>.
      throw e instanceof ConfigError ? e.message : String(e);
    }
  },
  // Nothing to carry across a swap: the rules come from the config.
  exportState() {
    return new Uint8Array(0);
  },
  importState(_state) {},
};

// The index of the rule that decides f, or -1 (the default). The gateway is asked which
// host patterns match once, and only when a host rule is reached.
function decidingRule(f) {
  let matches = null;
  for (let i = 0; i < config.rules.length; i++) {
    const r = config.rules[i];
    if (
      (r.protocol === null || r.protocol === f.protocol) &&
      contains(r.dst, f.dst) &&
      contains(r.src, f.src) &&
      (f.protocol === "icmp" || (r.ports[0] <= f.dstPort && f.dstPort <= r.ports[1]))
    ) {
      if (r.host !== null) {
        if (matches === null) matches = BigInt(dstMatches());
        if ((matches & (1n << BigInt(r.host))) === 0n) continue;
      }
      return i;
    }
  }
  return -1;
}

export const egress = {
  check(f) {
    const i = decidingRule(f);
    // holdMs undefined: a refusal holds as long as the gateway's policy.refusal_cache_ms.
    return { verdict: i < 0 ? config.def : config.rules[i].action, holdMs: undefined };
  },
  explain(f) {
    const i = decidingRule(f);
    if (i < 0) return { verdict: config.def, reason: `no rule of ${config.rules.length} matched: the default` };
    return { verdict: config.rules[i].action, reason: `rule[${i}] matched` };
  },
};
