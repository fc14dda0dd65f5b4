// egress-allowlist in C: the same rules and config format as the built-in Rust policy
// (policies/egress-allowlist), held to the same behaviour by tests/vectors/egress.toml.
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
// (names.set-patterns, which refuses what is not a domain name) and matched by it in
// check (names.dst-matches, asked once and only when a host rule is reached).
//
// The config is read by the small TOML reader below: comments, blank lines, `[[rule]]` and
// `key = "string"` or `key = 'string'`, which is all this format uses. Anything else is
// refused with its line number. No stdio, so the component imports no WASI at all.
//
// Build: ./build.sh (wit-bindgen c + clang-16) -> target/policies/egress_allowlist_c.wasm

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "egress_policy.h"

#define MAX_RULES 256
#define MSG_MAX 256

typedef natgw_policy_types_verdict_t verdict_t;

#define MAX_PATTERNS 64
#define NAME_MAX_ 253

typedef struct {
  bool any;  // absent or "any": every address, IPv4 or IPv6
  uint32_t net, mask;
} cidr_t;

typedef struct {
  verdict_t action;
  cidr_t dst, src;
  int protocol;  // -1: any; otherwise a NATGW_POLICY_TYPES_PROTOCOL_* value
  uint16_t lo, hi;
  int host;  // -1: any destination; otherwise the pattern's index (bit in dst-matches)
} rule_t;

static rule_t rules[MAX_RULES];
static size_t n_rules;
static char patterns[MAX_PATTERNS][NAME_MAX_ + 1];
static size_t pattern_len[MAX_PATTERNS];
static size_t n_patterns;
static verdict_t default_verdict = NATGW_POLICY_TYPES_VERDICT_DENY;

// ---- error messages, without stdio ------------------------------------------------------

typedef struct {
  char buf[MSG_MAX];
  size_t len;
} msg_t;

static void put(msg_t *m, const char *s, size_t n) {
  while (n-- && *s && m->len + 1 < MSG_MAX) m->buf[m->len++] = *s++;
  m->buf[m->len] = 0;
}
static void puts_(msg_t *m, const char *s) { put(m, s, strlen(s)); }
static void putu(msg_t *m, unsigned v) {
  char d[12];
  int i = 11;
  d[i] = 0;
  do d[--i] = (char)('0' + v % 10); while ((v /= 10) && i > 0);
  puts_(m, d + i);
}

// The key an error names: "default" or "rule[N].field".
typedef struct {
  const char *field;
  int rule;  // -1: top level
} key_t_;

static void putkey(msg_t *m, key_t_ k) {
  if (k.rule >= 0) {
    puts_(m, "rule[");
    putu(m, (unsigned)k.rule);
    puts_(m, "].");
  }
  puts_(m, k.field);
}

// ---- words, addresses, ports ------------------------------------------------------------

static bool word_eq(const char *s, size_t n, const char *w) {
  if (strlen(w) != n) return false;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
    if (c != w[i]) return false;
  }
  return true;
}

static void trim(const char **s, size_t *n) {
  while (*n && (**s == ' ' || **s == '\t')) (*s)++, (*n)--;
  while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t')) (*n)--;
}

// A decimal number of 1 to max_digits digits, no sign; false otherwise.
static bool number(const char *s, size_t n, size_t max_digits, unsigned long *out) {
  if (n == 0 || n > max_digits) return false;
  unsigned long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (unsigned long)(s[i] - '0');
  }
  *out = v;
  return true;
}

static bool ipv4(const char *s, size_t n, uint32_t *out) {
  uint32_t a = 0;
  for (int part = 0; part < 4; part++) {
    size_t len = 0;
    while (len < n && s[len] != '.') len++;
    unsigned long o;
    if (!number(s, len, 3, &o) || o > 255 || (len > 1 && s[0] == '0')) return false;
    a = (a << 8) | (uint32_t)o;
    if (part < 3) {
      if (len == n) return false;
      len++;  // the dot
    } else if (len != n) {
      return false;
    }
    s += len, n -= len;
  }
  *out = a;
  return true;
}

static void quoted_value(msg_t *m, const char *s, size_t n) {
  puts_(m, ": \"");
  put(m, s, n);
  puts_(m, "\"");
}

static bool parse_address(msg_t *m, key_t_ k, const char *s, size_t n, cidr_t *out) {
  trim(&s, &n);
  if (word_eq(s, n, "any")) {
    out->any = true;
    return true;
  }
  size_t slash = 0;
  while (slash < n && s[slash] != '/') slash++;
  uint32_t addr;
  unsigned long prefix = 32;
  if (!ipv4(s, slash, &addr)) {
    putkey(m, k);
    quoted_value(m, s, n);
    puts_(m, " is not an IPv4 address or CIDR");
    return false;
  }
  if (slash < n && (!number(s + slash + 1, n - slash - 1, 2, &prefix) || prefix > 32)) {
    putkey(m, k);
    quoted_value(m, s, n);
    puts_(m, " has a prefix length that is not 0-32");
    return false;
  }
  uint32_t mask = prefix == 0 ? 0 : 0xffffffffu << (32 - prefix);
  *out = (cidr_t){.any = false, .net = addr & mask, .mask = mask};
  return true;
}

static bool parse_ports(msg_t *m, key_t_ k, const char *s, size_t n, uint16_t *lo, uint16_t *hi) {
  trim(&s, &n);
  if (word_eq(s, n, "any") || (n == 1 && s[0] == '*')) {
    *lo = 0, *hi = 65535;
    return true;
  }
  size_t dash = 0;
  while (dash < n && s[dash] != '-') dash++;
  const char *a = s, *b = dash < n ? s + dash + 1 : s;
  size_t an = dash, bn = dash < n ? n - dash - 1 : dash;
  trim(&a, &an), trim(&b, &bn);
  unsigned long l, h;
  if (!number(a, an, 5, &l) || !number(b, bn, 5, &h) || l > 65535 || h > 65535 || l > h) {
    putkey(m, k);
    quoted_value(m, s, n);
    puts_(m, " is not a port or port range like 80 or 1024-65535");
    return false;
  }
  *lo = (uint16_t)l, *hi = (uint16_t)h;
  return true;
}

static bool parse_verdict(msg_t *m, key_t_ k, const char *s, size_t n, verdict_t *out) {
  if (word_eq(s, n, "allow")) *out = NATGW_POLICY_TYPES_VERDICT_ALLOW;
  else if (word_eq(s, n, "deny")) *out = NATGW_POLICY_TYPES_VERDICT_DENY;
  else if (word_eq(s, n, "reject")) *out = NATGW_POLICY_TYPES_VERDICT_REJECT;
  else {
    putkey(m, k);
    puts_(m, " = \"");
    put(m, s, n);
    puts_(m, "\": must be allow, deny or reject");
    return false;
  }
  return true;
}

static bool parse_protocol(msg_t *m, key_t_ k, const char *s, size_t n, int *out) {
  if (word_eq(s, n, "any")) *out = -1;
  else if (word_eq(s, n, "tcp")) *out = NATGW_POLICY_TYPES_PROTOCOL_TCP;
  else if (word_eq(s, n, "udp")) *out = NATGW_POLICY_TYPES_PROTOCOL_UDP;
  else if (word_eq(s, n, "icmp")) *out = NATGW_POLICY_TYPES_PROTOCOL_ICMP;
  else {
    putkey(m, k);
    puts_(m, " = \"");
    put(m, s, n);
    puts_(m, "\": must be tcp, udp, icmp or any");
    return false;
  }
  return true;
}

// ---- the config: a TOML subset ----------------------------------------------------------

static bool line_error(msg_t *m, unsigned line, const char *what) {
  puts_(m, "config: line ");
  putu(m, line);
  puts_(m, ": ");
  puts_(m, what);
  return false;
}

// The last rule has no action (checked at the next [[rule]] and at the end).
static bool missing_action(msg_t *m) {
  puts_(m, "config: rule[");
  putu(m, (unsigned)(n_rules - 1));
  puts_(m, "].action: missing field `action`");
  return false;
}

static bool is_key_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

// Only blanks, then optionally a comment, until the end of the line.
static bool rest_is_blank(const char *s, size_t n) {
  trim(&s, &n);
  return n == 0 || s[0] == '#';
}

// Registers `patterns[from..from + n]` with the gateway, which refuses what is not a
// domain name: its error goes into `m`, after the rule's key (`k`), or "rule[].host".
static bool register_patterns(msg_t *m, size_t from, size_t n, const key_t_ *k) {
  egress_policy_string_t list[MAX_PATTERNS];
  for (size_t i = 0; i < n; i++) list[i] = (egress_policy_string_t){(uint8_t *)patterns[from + i], pattern_len[from + i]};
  egress_policy_list_string_t arg = {list, n};
  egress_policy_string_t err;
  if (natgw_policy_names_set_patterns(&arg, &err)) return true;
  puts_(m, "config: ");
  if (k) {
    putkey(m, *k);
  } else {
    puts_(m, "rule[].host");
  }
  puts_(m, ": ");
  put(m, (const char *)err.ptr, err.len);
  egress_policy_string_free(&err);
  return false;
}

static bool parse_host(msg_t *m, key_t_ k, const char *s, size_t n, int *out) {
  if (n_patterns == MAX_PATTERNS) {
    puts_(m, "config: ");
    putkey(m, k);
    puts_(m, ": more than 64 host patterns: at most 64");
    return false;
  }
  if (n > NAME_MAX_) {
    puts_(m, "config: ");
    putkey(m, k);
    puts_(m, ": longer than 253 characters");
    return false;
  }
  memcpy(patterns[n_patterns], s, n);
  pattern_len[n_patterns] = n;
  // Checked one at a time, so that an error names its rule.
  if (!register_patterns(m, n_patterns, 1, &k)) return false;
  *out = (int)n_patterns++;
  return true;
}

static bool parse_config(const char *text, size_t len, msg_t *m) {
  static const char *const rule_keys[] = {"action", "dst", "src", "protocol", "ports", "host"};
  n_rules = 0;
  n_patterns = 0;
  default_verdict = NATGW_POLICY_TYPES_VERDICT_DENY;
  bool have_default = false, have_action = true;
  unsigned seen = 0;  // bit per rule key in the current rule
  unsigned line = 0;
  rule_t *r = NULL;
  size_t pos = 0;
  while (pos < len) {
    line++;
    size_t end = pos;
    while (end < len && text[end] != '\n') end++;
    const char *s = text + pos;
    size_t n = end - pos;
    pos = end + 1;
    if (n && s[n - 1] == '\r') n--;
    trim(&s, &n);
    if (n == 0 || s[0] == '#') continue;
    if (s[0] == '[') {
      const char *h = s + 2;
      size_t hn = 0;
      if (n < 4 || s[1] != '[') return line_error(m, line, "expected [[rule]]");
      while (2 + hn < n && s[2 + hn] != ']') hn++;
      const char *name = h;
      size_t nn = hn;
      trim(&name, &nn);
      if (!(nn == 4 && memcmp(name, "rule", 4) == 0) || 2 + hn + 2 > n || s[2 + hn + 1] != ']' ||
          !rest_is_blank(s + 2 + hn + 2, n - 2 - hn - 2))
        return line_error(m, line, "unknown table, expected [[rule]]");
      if (!have_action) return missing_action(m);
      if (n_rules == MAX_RULES) return line_error(m, line, "more than 256 rules");
      r = &rules[n_rules++];
      *r = (rule_t){.dst = {.any = true}, .src = {.any = true}, .protocol = -1, .lo = 0, .hi = 65535, .host = -1};
      have_action = false;
      seen = 0;
      continue;
    }
    size_t kn = 0;
    while (kn < n && is_key_char(s[kn])) kn++;
    const char *key = s;
    const char *v = s + kn;
    size_t vn = n - kn;
    trim(&v, &vn);
    if (kn == 0 || vn == 0 || v[0] != '=') return line_error(m, line, "expected key = \"value\"");
    v++, vn--;
    trim(&v, &vn);
    key_t_ k = {.field = NULL, .rule = r ? (int)(r - rules) : -1};
    int which = -1;
    if (!r) {
      if (kn == 7 && memcmp(key, "default", 7) == 0) {
        k.field = "default";
      } else {
        puts_(m, "config: unknown field `");
        put(m, key, kn);
        puts_(m, "`, expected `default` or `rule`");
        return false;
      }
    } else {
      for (int i = 0; i < 6; i++)
        if (strlen(rule_keys[i]) == kn && memcmp(key, rule_keys[i], kn) == 0) which = i;
      if (which < 0) {
        puts_(m, "config: rule[");
        putu(m, (unsigned)k.rule);
        puts_(m, "].");
        put(m, key, kn);
        puts_(m, ": unknown field `");
        put(m, key, kn);
        puts_(m, "`");
        return false;
      }
      k.field = rule_keys[which];
    }
    // The value: one basic ("...", with \" and \\) or literal ('...') string.
    char val[MSG_MAX];
    size_t len_v = 0, i = 1;
    char q = vn ? v[0] : 0;
    if (q != '"' && q != '\'') {
      puts_(m, "config: line ");
      putu(m, line);
      puts_(m, ": ");
      putkey(m, k);
      puts_(m, ": expected a quoted string");
      return false;
    }
    for (; i < vn && v[i] != q; i++) {
      char c = v[i];
      if (q == '"' && c == '\\' && i + 1 < vn && (v[i + 1] == '"' || v[i + 1] == '\\')) c = v[++i];
      if (len_v + 1 < sizeof val) val[len_v++] = c;
    }
    if (i >= vn || !rest_is_blank(v + i + 1, vn - i - 1)) {
      puts_(m, "config: line ");
      putu(m, line);
      puts_(m, ": ");
      putkey(m, k);
      puts_(m, ": unterminated string or text after it");
      return false;
    }
    if ((r && (seen & (1u << which))) || (!r && have_default)) {
      puts_(m, "config: line ");
      putu(m, line);
      puts_(m, ": ");
      putkey(m, k);
      puts_(m, ": duplicate key");
      return false;
    }
    bool ok = true;
    if (!r) {
      have_default = true;
      ok = parse_verdict(m, k, val, len_v, &default_verdict);
    } else {
      seen |= 1u << which;
      switch (which) {
        case 0: ok = parse_verdict(m, k, val, len_v, &r->action), have_action = true; break;
        case 1: ok = parse_address(m, k, val, len_v, &r->dst); break;
        case 2: ok = parse_address(m, k, val, len_v, &r->src); break;
        case 3: ok = parse_protocol(m, k, val, len_v, &r->protocol); break;
        case 4: ok = parse_ports(m, k, val, len_v, &r->lo, &r->hi); break;
        case 5: ok = parse_host(m, k, val, len_v, &r->host); break;
      }
    }
    if (!ok) return false;
  }
  if (!have_action) return missing_action(m);
  return register_patterns(m, 0, n_patterns, NULL);
}

// ---- the exports ------------------------------------------------------------------------

bool exports_natgw_policy_lifecycle_init(egress_policy_string_t *config, egress_policy_string_t *err) {
  msg_t m = {.len = 0};
  m.buf[0] = 0;
  bool ok = parse_config((const char *)config->ptr, config->len, &m);
  egress_policy_string_free(config);  // the callee owns its arguments
  if (!ok) {
    n_rules = 0;
    default_verdict = NATGW_POLICY_TYPES_VERDICT_DENY;
    egress_policy_string_dup(err, m.buf);
  }
  return ok;
}

// An IPv4 prefix never contains an IPv6 address.
static bool contains(const cidr_t *c, const natgw_policy_types_ip_address_t *a) {
  return c->any || (a->tag == NATGW_POLICY_TYPES_IP_ADDRESS_V4 && (a->val.v4 & c->mask) == c->net);
}

// The rule that decides `f`, or -1 (the default). The gateway is asked which host
// patterns a name bound to the destination matches once, and only when a host rule is reached.
static long deciding_rule(const exports_natgw_policy_egress_flow_t *f) {
  bool asked = false;
  uint64_t matches = 0;
  for (size_t i = 0; i < n_rules; i++) {
    const rule_t *r = &rules[i];
    if (!((r->protocol < 0 || r->protocol == f->protocol) && contains(&r->dst, &f->dst) && contains(&r->src, &f->src) &&
          (f->protocol == NATGW_POLICY_TYPES_PROTOCOL_ICMP || (r->lo <= f->dst_port && f->dst_port <= r->hi))))
      continue;
    if (r->host >= 0) {
      if (!asked) matches = natgw_policy_names_dst_matches(), asked = true;
      if (!(matches & ((uint64_t)1 << r->host))) continue;
    }
    return (long)i;
  }
  return -1;
}

void exports_natgw_policy_egress_check(exports_natgw_policy_egress_flow_t *f,
                                       exports_natgw_policy_egress_decision_t *ret) {
  long i = deciding_rule(f);
  ret->verdict = i < 0 ? default_verdict : rules[i].action;
  // No hold: a refusal holds as long as the gateway's policy.refusal_cache_ms.
  ret->hold_ms.is_some = false;
}

void exports_natgw_policy_egress_explain(exports_natgw_policy_egress_flow_t *f,
                                         exports_natgw_policy_egress_explanation_t *ret) {
  long i = deciding_rule(f);
  msg_t m = {.len = 0};
  if (i < 0) {
    puts_(&m, "no rule of ");
    putu(&m, (unsigned)n_rules);
    puts_(&m, " matched: the default");
    ret->verdict = default_verdict;
  } else {
    puts_(&m, "rule[");
    putu(&m, (unsigned)i);
    puts_(&m, "] matched");
    if (rules[i].host >= 0) {
      puts_(&m, " (host ");
      put(&m, patterns[rules[i].host], pattern_len[rules[i].host]);
      puts_(&m, ")");
    }
    ret->verdict = rules[i].action;
  }
  m.buf[m.len < MSG_MAX ? m.len : MSG_MAX - 1] = 0;
  egress_policy_string_dup(&ret->reason, m.buf);
}

// No state to carry across a swap: the rules come from the config.
void exports_natgw_policy_lifecycle_export_state(egress_policy_list_u8_t *ret) {
  ret->ptr = NULL;
  ret->len = 0;
}

bool exports_natgw_policy_lifecycle_import_state(egress_policy_list_u8_t *state, egress_policy_string_t *err) {
  (void)err;
  egress_policy_list_u8_free(state);  // the callee owns its arguments
  return true;
}
