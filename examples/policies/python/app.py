"""egress-allowlist in Python: the same rules and config format as the built-in Rust policy
(policies/egress-allowlist), held to the same behaviour by tests/vectors/egress.toml.

    default = "reject"          # allow | deny | reject (default: deny)
    [[rule]]
    action = "allow"
    dst = "203.0.113.80/32"     # an IPv4 address or CIDR, or any (default: any)
    protocol = "tcp"            # tcp | udp | icmp | any (default: any)
    ports = "80"                # a port or range, destination side, or any (default: any)
    src = "10.10.1.0/24"        # optional: the inside source
    host = "*.pypi.org"         # optional: a name natgw bound to the destination

Built against natgw:policy@0.2.0: host patterns are registered with the gateway at init
(names.set_patterns, which refuses what is not a domain name) and matched by it in check
(names.dst_matches, asked once and only when a host rule is reached).

Build: ./build.sh (componentize-py) -> target/policies/egress_allowlist_py.wasm
"""

import tomllib

from componentize_py_types import Err
from wit_world import WitWorld as _World, exports
from wit_world.imports import names
from wit_world.imports.types import Decision, Explanation, Flow, IpAddress_V4, Protocol, Verdict

VERDICTS = {"allow": Verdict.ALLOW, "deny": Verdict.DENY, "reject": Verdict.REJECT}
PROTOCOLS = {"tcp": Protocol.TCP, "udp": Protocol.UDP, "icmp": Protocol.ICMP}
RULE_KEYS = ("action", "dst", "src", "protocol", "ports", "host")


class ConfigError(Exception):
    pass


def parse_verdict(key, s):
    v = VERDICTS.get(s.lower())
    if v is None:
        raise ConfigError(f'{key} = "{s}": must be allow, deny or reject')
    return v


def parse_ipv4(s):
    parts = s.split(".")
    if len(parts) != 4 or not all(p.isdigit() and p.isascii() and len(p) <= 3 for p in parts):
        return None
    if any(len(p) > 1 and p[0] == "0" for p in parts):
        return None
    octets = [int(p) for p in parts]
    if any(o > 255 for o in octets):
        return None
    return (octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]


def parse_address(key, s):
    """None: any address (IPv4 or IPv6). Otherwise (network, mask) of an IPv4 CIDR."""
    if s is None or s.strip().lower() == "any":
        return None
    t = s.strip()
    a, _, p = t.partition("/")
    addr = parse_ipv4(a)
    if addr is None:
        raise ConfigError(f'{key}: "{t}" is not an IPv4 address or CIDR')
    p = p if "/" in t else "32"
    if not (p.isdigit() and p.isascii() and int(p) <= 32):
        raise ConfigError(f'{key}: "{t}" has a prefix length that is not 0-32')
    mask = 0 if int(p) == 0 else (0xFFFFFFFF << (32 - int(p))) & 0xFFFFFFFF
    return (addr & mask, mask)


def parse_port(s):
    s = s.strip()
    if not (s.isdigit() and s.isascii()) or int(s) > 65535:
        return None
    return int(s)


def parse_ports(key, s):
    if s is None or s.strip().lower() == "any" or s.strip() == "*":
        return (0, 65535)
    t = s.strip()
    lo, _, hi = t.partition("-")
    lo, hi = parse_port(lo), parse_port(hi if "-" in t else lo)
    if lo is None or hi is None or lo > hi:
        raise ConfigError(f'{key}: "{t}" is not a port or port range like 80 or 1024-65535')
    return (lo, hi)


def string(key, v):
    if v is not None and not isinstance(v, str):
        raise ConfigError(f"{key}: must be a string, not {v!r}")
    return v


def parse_config(text):
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {e}") from None
    for k in raw:
        if k not in ("default", "rule"):
            raise ConfigError(f"config: unknown field `{k}`, expected `default` or `rule`")
    default = parse_verdict("default", string("default", raw.get("default", "deny")))
    rules = raw.get("rule", [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise ConfigError("config: rule must be an array of tables ([[rule]])")
    out = []
    patterns = []
    for i, r in enumerate(rules):
        at = lambda k: f"rule[{i}].{k}"  # noqa: E731
        for k in r:
            if k not in RULE_KEYS:
                raise ConfigError(f"config: {at(k)}: unknown field `{k}`")
        if "action" not in r:
            raise ConfigError(f"config: {at('action')}: missing field `action`")
        proto = string(at("protocol"), r.get("protocol", "any"))
        if proto.lower() == "any":
            protocol = None
        elif proto.lower() in PROTOCOLS:
            protocol = PROTOCOLS[proto.lower()]
        else:
            raise ConfigError(f'{at("protocol")} = "{proto}": must be tcp, udp, icmp or any')
        host = string(at("host"), r.get("host"))
        if host is not None:
            # Checked one at a time, so that an error names its rule.
            register(at("host"), [host])
            patterns.append(host)
        out.append((
            parse_verdict(at("action"), string(at("action"), r["action"])),
            parse_address(at("dst"), string(at("dst"), r.get("dst"))),
            parse_address(at("src"), string(at("src"), r.get("src"))),
            protocol,
            parse_ports(at("ports"), string(at("ports"), r.get("ports"))),
            None if host is None else len(patterns) - 1,
        ))
    register("rule[].host", patterns)
    return default, out


def register(key, patterns):
    """Registers host patterns with the gateway, which refuses what is not a domain name."""
    try:
        names.set_patterns(patterns)
    except Err as e:
        raise ConfigError(f"config: {key}: {e.value}") from None


def contains(cidr, addr):
    if cidr is None:
        return True
    # An IPv4 prefix never contains an IPv6 address.
    return isinstance(addr, IpAddress_V4) and (addr.value & cidr[1]) == cidr[0]


_rules = []
_default = Verdict.DENY


class WitWorld(_World):
    pass


class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        global _rules, _default
        try:
            _default, _rules = parse_config(config)
        except ConfigError as e:
            raise Err(str(e))


    def export_state(self) -> bytes:
        # Nothing to carry across a swap: the rules come from the config.
        return b""

    def import_state(self, state: bytes) -> None:
        pass


def deciding_rule(f):
    """The index of the rule that decides f, or None (the default). The gateway is asked
    which host patterns match once, and only when a host rule is reached."""
    matches = None
    for i, (action, dst, src, protocol, (lo, hi), host) in enumerate(_rules):
        if (protocol is None or protocol == f.protocol) and contains(dst, f.dst) and contains(src, f.src) \
                and (f.protocol == Protocol.ICMP or lo <= f.dst_port <= hi):
            if host is not None:
                if matches is None:
                    matches = names.dst_matches()
                if not matches & (1 << host):
                    continue
            return i
    return None


class Egress(exports.Egress):
    def check(self, f: Flow) -> Decision:
        i = deciding_rule(f)
        # hold_ms None: a refusal holds as long as the gateway's policy.refusal_cache_ms.
        return Decision(_default if i is None else _rules[i][0], None)

    def explain(self, f: Flow) -> Explanation:
        i = deciding_rule(f)
        if i is None:
            return Explanation(_default, f"no rule of {len(_rules)} matched: the default")
        return Explanation(_rules[i][0], f"rule[{i}] matched")
