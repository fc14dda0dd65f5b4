//! The DNS message view on arbitrary bytes: the header, the question and every answer.
//! Invariants: no panic; every name read is what `Name` promises (at most 253 characters,
//! labels of 1 to 63 bytes of `[a-z0-9-_]` joined by single dots) and reads back the same
//! from its text; the answers yielded are at most `min(answer_count, MAX_RECORDS)`, and
//! nothing follows an error; `skipped` counts only records beyond `MAX_RECORDS` that were
//! declared. And what was read, built again with `Builder` (uncompressed), reads back equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use natgw_wire::dns::{
    Builder, Message, Name, Record, RecordData, CLASS_IN, MAX_NAME_TEXT, MAX_RECORDS, TYPE_A, TYPE_AAAA, TYPE_CNAME,
};

fn check_name(name: &Name) {
    let text = name.as_str();
    assert!(text.len() <= MAX_NAME_TEXT, "{name:?}");
    assert_eq!((name.len(), name.is_empty()), (text.len(), text.is_empty()));
    if !text.is_empty() {
        for label in text.split('.') {
            assert!((1..=63).contains(&label.len()), "label of {} bytes in {name:?}", label.len());
            assert!(label.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_')), "{name:?}");
        }
    } else {
        assert_eq!(*name, Name::ROOT);
    }
    assert_eq!(Name::from_text(text), Ok(*name));
    assert_eq!(name.to_string(), text);
}

/// The records as `Builder` writes them: class IN, and only the data types it has.
fn rebuildable(r: &Record) -> bool {
    r.class == CLASS_IN && matches!(r.rtype, TYPE_A | TYPE_AAAA | TYPE_CNAME)
}

fuzz_target!(|data: &[u8]| {
    let Ok(m) = Message::new_checked(data) else { return };
    let _ = (m.id(), m.is_response(), m.opcode(), m.rcode(), m.truncated(), m.question_count());
    assert!(m.opcode() < 16 && m.rcode() < 16);
    let Ok(q) = m.question() else { return };
    check_name(&q.name);
    assert!(q.end <= data.len());
    let limit = usize::from(m.answer_count()).min(MAX_RECORDS);
    let mut answers = m.answers(&q);
    let skipped = answers.skipped();
    assert!(skipped <= usize::from(m.answer_count()).saturating_sub(MAX_RECORDS));
    let mut records = Vec::new();
    let mut yielded = 0;
    while let Some(r) = answers.next() {
        yielded += 1;
        assert!(yielded <= limit, "{yielded} answers of {}", m.answer_count());
        match r {
            Ok(r) => {
                check_name(&r.name);
                if let RecordData::Cname(target) = &r.data {
                    check_name(target);
                }
                assert!(r.ttl <= i32::MAX as u32);
                match r.data {
                    RecordData::A(_) => assert_eq!((r.rtype, r.class), (TYPE_A, CLASS_IN)),
                    RecordData::Aaaa(_) => assert_eq!((r.rtype, r.class), (TYPE_AAAA, CLASS_IN)),
                    RecordData::Cname(_) => assert_eq!((r.rtype, r.class), (TYPE_CNAME, CLASS_IN)),
                    RecordData::Other => assert!(!rebuildable(&r)),
                }
                records.push(r);
            }
            Err(_) => {
                assert!(answers.next().is_none() && answers.next().is_none(), "an answer after an error");
                break;
            }
        }
    }
    assert_eq!(answers.skipped(), skipped);

    // Built again, uncompressed: the same question, and the same records.
    let mut buf = vec![0u8; 65_535];
    let Ok(mut b) = Builder::response(&mut buf, m.id(), &q.name, q.qtype, m.rcode()) else {
        panic!("no room for the question {:?}", q.name)
    };
    let mut kept = Vec::new();
    for r in records.iter().filter(|r| rebuildable(r)) {
        b.answer(&r.name, r.ttl, &r.data).expect("room for an answer");
        kept.push(*r);
    }
    let n = b.finish();
    let again = Message::new_checked(&buf[..n]).expect("a built message");
    assert_eq!((again.id(), again.rcode(), usize::from(again.answer_count())), (m.id(), m.rcode(), kept.len()));
    let q2 = again.question().expect("the built question");
    assert_eq!((q2.name, q2.qtype, q2.qclass), (q.name, q.qtype, CLASS_IN));
    let read: Vec<Record> = again.answers(&q2).map(|r| r.expect("a built answer")).collect();
    assert_eq!(read, kept);
});
