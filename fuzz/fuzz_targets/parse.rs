//! Every parser natgw runs on untrusted bytes: Ethernet, ARP, IPv4, the L4 headers, ICMP
//! error quotes and the ARP state machine. None may panic. (The config file is operator
//! input, not traffic: `natgw`'s own tests feed its parser mutated configs.)
#![no_main]
use libfuzzer_sys::fuzz_target;
use natgw_core::l2::{Arp, L2Link};
use natgw_core::nat::parse_quote;
use natgw_wire::{parse_l4, ArpPacket, EthernetFrame, Ipv4Net, Ipv4Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

fuzz_target!(|data: &[u8]| {
    if let Ok(eth) = EthernetFrame::new_checked(data) {
        let _ = (eth.dst(), eth.src(), eth.ethertype());
        if let Ok(arp) = ArpPacket::new_checked(eth.payload()) {
            let _ = (arp.operation(), arp.sender_ip(), arp.sender_mac(), arp.target_ip());
        }
        if let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) {
            let _ = (ip.src(), ip.dst(), ip.ttl(), ip.is_fragment(), ip.verify_checksum(), ip.ident());
            let _ = parse_l4(ip.protocol(), ip.payload());
        }
    }
    for proto in [PROTO_TCP, PROTO_UDP, PROTO_ICMP] {
        let _ = parse_l4(proto, data);
    }
    let _ = parse_quote(data);
    let mut arp = Arp::new(vec![L2Link {
        name: "in1".into(),
        mac: [2, 0, 0, 0, 0, 1],
        addresses: vec![Ipv4Net { addr: [10, 10, 1, 1].into(), prefix: 24 }],
    }]);
    let _ = arp.receive(0, data, 0, &mut [0u8; 64]);
});
