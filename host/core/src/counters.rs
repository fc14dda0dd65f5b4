//! Per-worker counters, named as operators know them from the AWS NAT gateway metrics.
//!
//! Each worker owns one `Counters`; only that worker writes it (a relaxed load + store,
//! which compiles to plain moves: no lock, no locked instruction), and the control thread
//! reads any worker's at any time. Totals are the sum over workers.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal ),* $(,)?) => {
        /// Every counter natgw keeps. Drop reasons are `PacketsDropCount` with a `reason`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Counter { $( $(#[$doc])* $variant ),* }
        impl Counter {
            pub const ALL: &'static [Counter] = &[ $( Counter::$variant ),* ];
            /// The operator-facing name, e.g. `PacketsDropCount{reason="bad-ihl"}`.
            pub fn name(self) -> &'static str {
                match self { $( Counter::$variant => $name ),* }
            }
        }
    };
}

counters! {
    ActiveConnectionCount => "ActiveConnectionCount",
    ConnectionAttemptCount => "ConnectionAttemptCount",
    ConnectionEstablishedCount => "ConnectionEstablishedCount",
    ErrorPortAllocation => "ErrorPortAllocation",
    IdleTimeoutCount => "IdleTimeoutCount",
    /// Flows never answered that natgw gave up before their timeout to make room: the
    /// oldest one when a new flow found the table full, or past the high-water mark those
    /// older than `timeouts.unanswered_under_pressure`.
    EarlyDropCount => "EarlyDropCount",
    BytesInFromSource => "BytesInFromSource",
    BytesOutToDestination => "BytesOutToDestination",
    BytesInFromDestination => "BytesInFromDestination",
    BytesOutToSource => "BytesOutToSource",
    PacketsInFromSource => "PacketsInFromSource",
    PacketsOutToDestination => "PacketsOutToDestination",
    PacketsInFromDestination => "PacketsInFromDestination",
    PacketsOutToSource => "PacketsOutToSource",
    /// Echo requests to natgw's own addresses that it answered.
    IcmpEchoRepliesSent => "IcmpEchoRepliesSent",
    /// ICMP errors natgw generated itself (time exceeded, fragmentation needed).
    IcmpErrorsSent => "IcmpErrorsSent",
    /// TCP resets natgw sent (egress policy `reject`, or a flow closed by `--revalidate`).
    TcpResetsSent => "TcpResetsSent",
    /// Policy calls that trapped, ran out of time or memory, or answered nonsense; the
    /// hook's fail mode applied.
    PolicyErrors => "PolicyErrors",
    /// Flows closed because a new egress policy denied them (`policy swap --revalidate`).
    PolicyRevokedFlows => "PolicyRevokedFlows",
    /// Finished flows handed to the flow log, and those lost because its queue was full.
    FlowLogRecords => "FlowLogRecords",
    FlowLogQueueOverflow => "FlowLogQueueOverflow",
    /// Flow-log entries written after the flow-log policy (sampling and filtering happen
    /// between FlowLogRecords and this).
    FlowLogExported => "FlowLogExported",
    /// Flow records waiting for the OTLP exporter: its buffer and the batch in flight (a
    /// gauge).
    OtlpRecordsQueued => "OtlpRecordsQueued",
    /// Flow records the collector accepted.
    OtlpRecordsSent => "OtlpRecordsSent",
    /// Export calls that failed (collector down or refusing, TLS, timeout) and are tried
    /// again after a backoff.
    OtlpExportRetries => "OtlpExportRetries",
    /// Flow records lost to OTLP: its buffer was full, or the gateway stopped before the
    /// collector took them.
    OtlpRecordsDropped => "OtlpRecordsDropped",
    /// Metric exports the collector accepted, and those that failed.
    OtlpMetricExports => "OtlpMetricExports",
    OtlpMetricExportErrors => "OtlpMetricExportErrors",
    /// Fragment state (one datagram's) given up, oldest first, because the fragment
    /// memory budget (`nat.fragment_memory_kib`) was reached.
    FragmentEvictionCount => "FragmentEvictionCount",
    /// First fragments passed on whose datagram natgw could not track, because their
    /// source holds its share of the fragment memory: the rest of that datagram is
    /// dropped as unmatched.
    FragmentTrackingRefused => "FragmentTrackingRefused",
    /// A neighbour's MAC address changed after natgw's own request confirmed it (a
    /// router's failover), and changes refused: the old address still answered, or none.
    NeighbourChangesConfirmed => "NeighbourChangesConfirmed",
    NeighbourChangesRefused => "NeighbourChangesRefused",
    /// Resolved neighbours not cached (the cache holds 65 536), and resolutions not
    /// started (4096 outstanding at most, 1024 queued from the workers).
    NeighbourCacheFull => "NeighbourCacheFull",
    NeighbourResolutionsRefused => "NeighbourResolutionsRefused",
    /// Frames moved to another worker (fragments, hairpin) to keep a flow on its owner.
    HandoffFrames => "HandoffFrames",
    /// Frames read from PACKET_MMAP receive rings (`dataplane.receive = "ring"`), and
    /// those too large for a slot, which came whole by the socket instead.
    ReceiveRingFrames => "ReceiveRingFrames",
    ReceiveRingFramesQueued => "ReceiveRingFramesQueued",
    /// Times the watchdog saw a worker not turn its loop for 500 ms (it turns at least
    /// every 10 ms), once per stall; logged with the worker and how long.
    WorkerStalls => "WorkerStalls",
    /// Policy calls answered by the hook's fail mode because the instance had failed and
    /// its spare was not ready yet (spares are made off the data plane, at most one per
    /// 100 ms per caller and hook); also counted in `PolicyErrors`.
    PolicySpareMisses => "PolicySpareMisses",
    /// New-flow packets refused from the refusal cache (`policy.refusal_cache_ms`): the
    /// policy's answer for the same tuple a moment ago, without a call.
    PolicyRefusalsCached => "PolicyRefusalsCached",
    /// Refusals the cache gave up while they still held, for another tuple's in the same
    /// slot (it holds 4096 per worker): that tuple's next packet asks the policy again.
    PolicyRefusalsEvicted => "PolicyRefusalsEvicted",
    /// The shadow egress policy (`natgw policy shadow`): calls it answered, answers that
    /// differ from the live policy's, calls skipped because shadow calls had used their
    /// share of the worker (10 % of each second: the live decision never waits for one),
    /// and calls that failed (the live policy decides as ever).
    PolicyShadowCalls => "PolicyShadowCalls",
    PolicyShadowDisagreements => "PolicyShadowDisagreements",
    PolicyShadowSkipped => "PolicyShadowSkipped",
    PolicyShadowErrors => "PolicyShadowErrors",
    /// Policy state handed from a worker's instance of one generation to its instance of
    /// the next at a swap (natgw:policy@0.2.0 `export-state`/`import-state`), and state
    /// lost on the way (a trap, a timeout, over 4 MiB, refused by `import-state`).
    PolicyStateCarried => "PolicyStateCarried",
    PolicyStateLost => "PolicyStateLost",
    /// Refused packets counted into a summary REJECT record (one per tuple and interval)
    /// instead of a record each.
    FlowLogRefusalsSummarized => "FlowLogRefusalsSummarized",
    /// Flows taken over from the process before this one (`natgw upgrade`), a standby's
    /// replica at promotion or the flow journal at a restart, with their mappings, state
    /// and counters.
    HandoffFlowsImported => "HandoffFlowsImported",
    /// Flows in handed-over state that were refused: records that did not parse or that
    /// natgw would never build, collisions with a flow or mapping already held, no room.
    HandoffFlowsRefused => "HandoffFlowsRefused",
    /// Replication events a standby was sent (`[ha]`): flows created or changed, ended,
    /// and every record of a bulk resync.
    HaSyncSent => "HaSyncSent",
    /// Events the standby acknowledged having applied.
    HaSyncAcked => "HaSyncAcked",
    /// Events sent and not yet acknowledged (a gauge: the standby's lag).
    HaSyncLagEvents => "HaSyncLagEvents",
    /// Bulk resyncs: sent by the active (a standby joined, rejoined or lost events),
    /// received by the standby.
    HaResyncs => "HaResyncs",
    /// Batches of events lost because the sync thread fell behind (each calls for a resync).
    HaSyncOverflow => "HaSyncOverflow",
    /// Sync connections and messages refused: from an address other than the peer, a bad
    /// HMAC, a format this natgw does not read, or a peer of another configuration.
    HaSyncRejectedPeer => "HaSyncRejected{reason=\"peer\"}",
    HaSyncRejectedAuth => "HaSyncRejected{reason=\"auth\"}",
    HaSyncRejectedFormat => "HaSyncRejected{reason=\"format\"}",
    HaSyncRejectedConfig => "HaSyncRejected{reason=\"config\"}",
    /// Flows the standby holds for the active (a gauge).
    HaReplicaFlows => "HaReplicaFlows",
    /// Replicated flows the standby had no room for.
    HaReplicaFull => "HaReplicaFull",
    /// Flows a start took from the flow journal a stopped or crashed natgw left in
    /// systemd's file-descriptor store.
    JournalFlowsRestored => "JournalFlowsRestored",
    /// Journal slots a start skipped: torn by a crash in the middle of their write, or
    /// refused by the import.
    JournalFlowsRefused => "JournalFlowsRefused",
    /// Times a worker rewrote its whole journal because its log overflowed between turns.
    JournalRescans => "JournalRescans",
    /// DNS binding (`[dns]`): queries to a configured resolver filed to be matched by
    /// their answer, and those not filed (a host's or the worker's outstanding queries
    /// at their bound): their answers bind nothing.
    DnsQueriesTracked => "DnsQueriesTracked",
    DnsQueriesUntracked => "DnsQueriesUntracked",
    /// Answers that answered a filed query (their names are bound), and answers that
    /// answered none (spoofed, late, repeated): they bind nothing.
    DnsAnswersMatched => "DnsAnswersMatched",
    DnsAnswersUnmatched => "DnsAnswersUnmatched",
    /// DNS messages that did not parse (compression loops, truncated records, bad labels):
    /// forwarded untouched, nothing bound.
    DnsMessagesMalformed => "DnsMessagesMalformed",
    /// Answers with a name natgw could not bind: the host's, the address's or the whole
    /// name table's bound was reached (`[dns]` limits).
    DnsBindingsRefused => "DnsBindingsRefused",
    /// DNS over TCP natgw could not read, so nothing in it binds: a stream whose SYN it did
    /// not see, a gap in a stream (a segment lost or reordered before natgw), a message
    /// over its bound, a stream past the per-worker or per-host bound.
    DnsTcpUnread => "DnsTcpUnread",
    DropTruncated => "PacketsDropCount{reason=\"truncated\"}",
    DropUnknownEthertype => "PacketsDropCount{reason=\"unknown-ethertype\"}",
    DropBadIhl => "PacketsDropCount{reason=\"bad-ihl\"}",
    DropBadTotalLength => "PacketsDropCount{reason=\"bad-total-length\"}",
    DropBadIpChecksum => "PacketsDropCount{reason=\"bad-ip-checksum\"}",
    DropIpOptions => "PacketsDropCount{reason=\"ip-options\"}",
    DropBadTcpHeader => "PacketsDropCount{reason=\"bad-tcp-header\"}",
    DropBadUdpLength => "PacketsDropCount{reason=\"bad-udp-length\"}",
    DropBadIcmp => "PacketsDropCount{reason=\"bad-icmp\"}",
    DropBadIcmpQuote => "PacketsDropCount{reason=\"bad-icmp-quote\"}",
    DropUnsupportedProtocol => "PacketsDropCount{reason=\"unsupported-protocol\"}",
    /// Frames a standby received: it forwards nothing until promoted.
    DropStandby => "PacketsDropCount{reason=\"standby\"}",
    DropUnsolicitedInbound => "PacketsDropCount{reason=\"unsolicited-inbound\"}",
    DropToPrivateAddress => "PacketsDropCount{reason=\"to-private-address\"}",
    DropTcpNoFlow => "PacketsDropCount{reason=\"tcp-not-syn\"}",
    /// A TCP segment outside its connection's window (a blind reset, a forged or stale
    /// segment): dropped, the connection unchanged.
    DropTcpOutOfWindow => "PacketsDropCount{reason=\"tcp-out-of-window\"}",
    /// A new flow found the table full of answered flows (none to drop early).
    DropTableFull => "PacketsDropCount{reason=\"table-full\"}",
    /// A new flow from an inside host that holds `nat.max_flows_per_source` already.
    DropSourceFlowLimit => "PacketsDropCount{reason=\"source-flow-limit\"}",
    /// A new flow from outside towards a mapping that has
    /// `nat.max_inbound_flows_per_mapping` already (endpoint-independent filtering).
    DropMappingInboundLimit => "PacketsDropCount{reason=\"mapping-inbound-limit\"}",
    DropPortAllocation => "PacketsDropCount{reason=\"port-allocation\"}",
    DropTtlExpired => "PacketsDropCount{reason=\"ttl-expired\"}",
    DropNeedsFragmentation => "PacketsDropCount{reason=\"needs-fragmentation\"}",
    DropFragment => "PacketsDropCount{reason=\"fragment-unmatched\"}",
    /// An early fragment from a source that holds its share of the fragment memory.
    DropFragmentSourceShare => "PacketsDropCount{reason=\"fragment-source-share\"}",
    DropNeighbourUnresolved => "PacketsDropCount{reason=\"neighbour-unresolved\"}",
    DropNoRoute => "PacketsDropCount{reason=\"no-route\"}",
    DropSourceNotInside => "PacketsDropCount{reason=\"source-not-inside\"}",
    DropNotForUs => "PacketsDropCount{reason=\"not-for-us\"}",
    DropTxFull => "PacketsDropCount{reason=\"tx-queue-full\"}",
    /// A frame for another worker (a fragment, a hairpin) found that worker's hand-off
    /// queue full (1024 frames).
    DropHandoffFull => "PacketsDropCount{reason=\"handoff-queue-full\"}",
    /// Frames the kernel dropped before natgw read them: a socket's receive queue was
    /// full (natgw reads a bounded batch per round; the rest waits or is dropped here).
    DropRxQueueFull => "PacketsDropCount{reason=\"rx-queue-full\"}",
    DropPolicyDenied => "PacketsDropCount{reason=\"policy-denied\"}",
    DropPolicyRejected => "PacketsDropCount{reason=\"policy-rejected\"}",
    /// A policy failed and its hook fails closed.
    DropPolicyError => "PacketsDropCount{reason=\"policy-error\"}",
    /// A packet of a flow a new egress policy revoked (answered with a RST for TCP).
    DropPolicyRevoked => "PacketsDropCount{reason=\"policy-revoked\"}",
}

impl Counter {
    /// The metric name without labels, and the drop reason if it is one:
    /// `("PacketsDropCount", Some("bad-ihl"))`.
    pub fn metric(self) -> (&'static str, Option<&'static str>) {
        let name = self.name();
        match name.split_once("{reason=\"") {
            Some((base, rest)) => (base, Some(rest.trim_end_matches("\"}"))),
            None => (name, None),
        }
    }

    /// A level, not a running total.
    pub fn is_gauge(self) -> bool {
        matches!(self, Counter::ActiveConnectionCount | Counter::OtlpRecordsQueued)
    }

    /// The unit, in UCUM as OpenTelemetry uses it.
    pub fn unit(self) -> &'static str {
        if self.metric().0.starts_with("Bytes") {
            "By"
        } else {
            "1"
        }
    }
}

const N: usize = Counter::ALL.len();

pub struct Counters {
    values: [AtomicU64; N],
}

impl Default for Counters {
    fn default() -> Self {
        Counters { values: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl Counters {
    /// Adds `n`. Only the owning worker calls this: load + store is enough for one writer.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        let v = &self.values[c as usize];
        v.store(v.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
    #[inline]
    pub fn inc(&self, c: Counter) {
        self.add(c, 1)
    }
    /// Sets a gauge (ActiveConnectionCount).
    pub fn set(&self, c: Counter, v: u64) {
        self.values[c as usize].store(v, Ordering::Relaxed);
    }
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize].load(Ordering::Relaxed)
    }
}

/// Sums counters over workers, in declaration order.
pub fn total(workers: &[std::sync::Arc<Counters>]) -> Vec<(Counter, u64)> {
    Counter::ALL.iter().map(|&c| (c, workers.iter().map(|w| w.get(c)).sum())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_aws_ones_and_unique() {
        let mut names: Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        assert!(names.contains(&"ActiveConnectionCount"));
        assert!(names.contains(&"ErrorPortAllocation"));
        assert!(names.iter().any(|n| n.starts_with("PacketsDropCount{reason=")));
        let before = names.len();
        names.sort();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn metric_splits_the_drop_reason() {
        assert_eq!(Counter::DropBadIhl.metric(), ("PacketsDropCount", Some("bad-ihl")));
        assert_eq!(Counter::BytesOutToSource.metric(), ("BytesOutToSource", None));
        assert_eq!(Counter::BytesOutToSource.unit(), "By");
        assert!(Counter::ActiveConnectionCount.is_gauge() && !Counter::PacketsInFromSource.is_gauge());
    }

    #[test]
    fn add_and_total() {
        let a = std::sync::Arc::new(Counters::default());
        let b = std::sync::Arc::new(Counters::default());
        a.add(Counter::BytesInFromSource, 100);
        b.inc(Counter::BytesInFromSource);
        let t = total(&[a, b]);
        assert_eq!(t.iter().find(|(c, _)| *c == Counter::BytesInFromSource).unwrap().1, 101);
    }
}
