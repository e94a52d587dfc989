//! The fault suite's checker (issue 9): a history of operations, each logged as invoked and
//! then ok, failed or unknown, counted the way Jepsen's total-queue checker counts a queue.
//! Pure logic, so its self-test can prove it fails histories with a message dropped, doubled
//! or reordered.

use std::collections::{BTreeMap, HashMap, HashSet};

/// How an operation ended, from the client's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Confirmed (a RECEIPT, a COMMIT receipt).
    Ok,
    /// Refused (an ERROR saying nothing was done).
    Fail,
    /// The connection broke before the answer: it may or may not have happened.
    Unknown,
}

/// One entry of a history.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A message sent (within a transaction or alone), identified by its dedup id.
    Send {
        dedup: String,
        producer: usize,
        /// The producer's own sequence number: its messages are sent in this order.
        seq: u64,
        /// The message group and the message's sequence in it.
        group: Option<(String, u64)>,
        outcome: Outcome,
    },
    /// A delivery to a consumer.
    Deliver {
        dedup: String,
        message_id: String,
        consumer: usize,
        /// The broker marked it redelivered (`redelivered:true`): an earlier delivery may
        /// have been lost on the way, so JMS lets it arrive after later messages.
        redelivered: bool,
    },
    /// An acknowledgement of a delivered message.
    Ack {
        message_id: String,
        outcome: Outcome,
    },
}

/// What the checker counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub sent_ok: usize,
    pub sent_unknown: usize,
    pub delivered: usize,
    /// Confirmed sends never delivered.
    pub lost: Vec<String>,
    /// Deliveries of messages never sent.
    pub unexpected: Vec<String>,
    /// Dedup ids delivered under two or more message ids.
    pub duplicated: Vec<String>,
    /// Deliveries after the message's ack was confirmed.
    pub redelivered_after_ack: Vec<String>,
    /// First deliveries within a group out of the group's order.
    pub group_order: Vec<String>,
    /// First deliveries of ungrouped messages to one consumer out of their producer's order
    /// (grouped ones are judged by their group's order; a delivery the broker marks
    /// redelivered is not judged, as JMS allows it to come late).
    pub producer_order: Vec<String>,
    /// Sends whose outcome was unknown and that were delivered (they happened).
    pub recovered: usize,
}

impl Report {
    /// True when nothing was lost, invented, doubled or reordered.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.unexpected.is_empty()
            && self.duplicated.is_empty()
            && self.redelivered_after_ack.is_empty()
            && self.group_order.is_empty()
            && self.producer_order.is_empty()
    }
}

/// What a history says of one sent message: producer, producer sequence, group, best outcome.
type SendInfo<'a> = (usize, u64, Option<&'a (String, u64)>, Outcome);

/// Counts a history (events in the order they were observed).
pub fn check(history: &[Event]) -> Report {
    let mut r = Report::default();
    // dedup -> (producer, seq, group, outcome)
    let mut sends: HashMap<&str, SendInfo<'_>> = HashMap::new();
    for e in history {
        if let Event::Send {
            dedup,
            producer,
            seq,
            group,
            outcome,
        } = e
        {
            // A retried send keeps its best outcome (ok beats unknown beats fail).
            let rank = |o: Outcome| match o {
                Outcome::Ok => 2,
                Outcome::Unknown => 1,
                Outcome::Fail => 0,
            };
            let entry =
                sends
                    .entry(dedup.as_str())
                    .or_insert((*producer, *seq, group.as_ref(), *outcome));
            if rank(*outcome) > rank(entry.3) {
                entry.3 = *outcome;
            }
        }
    }
    r.sent_ok = sends.values().filter(|s| s.3 == Outcome::Ok).count();
    r.sent_unknown = sends.values().filter(|s| s.3 == Outcome::Unknown).count();

    let mut ids_of: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
    let mut acked: HashSet<&str> = HashSet::new();
    let mut first_seen: HashSet<&str> = HashSet::new();
    let mut group_high: HashMap<&str, u64> = HashMap::new();
    let mut producer_high: HashMap<(usize, usize), u64> = HashMap::new();
    for e in history {
        match e {
            Event::Deliver {
                dedup,
                message_id,
                consumer,
                redelivered,
            } => {
                r.delivered += 1;
                ids_of.entry(dedup).or_default().insert(message_id);
                if acked.contains(message_id.as_str()) {
                    r.redelivered_after_ack.push(message_id.clone());
                }
                let Some(&(producer, seq, group, _)) = sends.get(dedup.as_str()) else {
                    r.unexpected.push(dedup.clone());
                    continue;
                };
                if !first_seen.insert(dedup) {
                    continue; // a redelivery: order is judged on first deliveries
                }
                if let Some((g, gseq)) = group {
                    let high = group_high.entry(g).or_insert(0);
                    if *gseq < *high {
                        r.group_order.push(format!("{g}: {gseq} after {high}"));
                    }
                    *high = (*high).max(*gseq);
                    // Grouped messages are their own lane (claimed in sequence order, apart
                    // from plain ones): their order is the group's, judged above.
                    continue;
                }
                if *redelivered {
                    // JMS orders first deliveries only; one the broker marks redelivered
                    // (its earlier delivery never reached a client) may come late.
                    continue;
                }
                let high = producer_high.entry((*consumer, producer)).or_insert(0);
                if seq < *high {
                    r.producer_order.push(format!(
                        "producer {producer}: {seq} after {high} to consumer {consumer}"
                    ));
                }
                *high = (*high).max(seq);
            }
            Event::Ack {
                message_id,
                outcome: Outcome::Ok,
            } => {
                acked.insert(message_id);
            }
            _ => {}
        }
    }
    for (dedup, (_, _, _, outcome)) in &sends {
        let delivered = ids_of.contains_key(dedup);
        match outcome {
            Outcome::Ok if !delivered => r.lost.push(dedup.to_string()),
            Outcome::Unknown if delivered => r.recovered += 1,
            _ => {}
        }
    }
    r.lost.sort();
    r.duplicated = ids_of
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(d, _)| d.to_string())
        .collect();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(dedup: &str, producer: usize, seq: u64, group: Option<(&str, u64)>) -> Event {
        Event::Send {
            dedup: dedup.into(),
            producer,
            seq,
            group: group.map(|(g, s)| (g.into(), s)),
            outcome: Outcome::Ok,
        }
    }

    fn deliver(dedup: &str, id: &str, consumer: usize) -> Event {
        Event::Deliver {
            dedup: dedup.into(),
            message_id: id.into(),
            consumer,
            redelivered: false,
        }
    }

    fn ack(id: &str) -> Event {
        Event::Ack {
            message_id: id.into(),
            outcome: Outcome::Ok,
        }
    }

    /// Two producers, a group of three, two consumers; every message delivered and acked once.
    fn clean() -> Vec<Event> {
        vec![
            send("a1", 1, 1, Some(("g", 1))),
            send("a2", 1, 2, Some(("g", 2))),
            send("b1", 2, 1, None),
            send("a3", 1, 3, Some(("g", 3))),
            send("b2", 2, 2, None),
            deliver("a1", "ID:1", 1),
            ack("ID:1"),
            deliver("b1", "ID:3", 2),
            deliver("a2", "ID:2", 1),
            ack("ID:2"),
            ack("ID:3"),
            deliver("a3", "ID:4", 1),
            deliver("b2", "ID:5", 2),
            ack("ID:4"),
            ack("ID:5"),
        ]
    }

    #[test]
    fn a_clean_history_is_clean() {
        let r = check(&clean());
        assert!(r.is_clean(), "{r:?}");
        assert_eq!((r.sent_ok, r.delivered), (5, 5));
    }

    #[test]
    fn the_checker_fails_a_history_with_one_message_dropped_one_doubled_and_one_reordered() {
        // Dropped: b2 is never delivered.
        let mut h = clean();
        h.retain(|e| !matches!(e, Event::Deliver { dedup, .. } if dedup == "b2"));
        let r = check(&h);
        assert_eq!(r.lost, ["b2"]);
        assert!(!r.is_clean());

        // Doubled: b1 delivered again under another message id (enqueued twice).
        let mut h = clean();
        h.push(deliver("b1", "ID:9", 1));
        let r = check(&h);
        assert_eq!(r.duplicated, ["b1"]);

        // Reordered: the group's a3 delivered before a2.
        let mut h = clean();
        let i2 = h
            .iter()
            .position(|e| matches!(e, Event::Deliver { dedup, .. } if dedup == "a2"))
            .unwrap();
        let i3 = h
            .iter()
            .position(|e| matches!(e, Event::Deliver { dedup, .. } if dedup == "a3"))
            .unwrap();
        h.swap(i2, i3);
        let r = check(&h);
        assert_eq!(r.group_order.len(), 1, "{r:?}");
        assert!(!r.is_clean());

        // Reordered outside groups: b2 delivered before b1 to the same consumer.
        let mut h = clean();
        h.retain(|e| !matches!(e, Event::Deliver { dedup, .. } if dedup == "b1"));
        let i = h
            .iter()
            .position(|e| matches!(e, Event::Deliver { dedup, .. } if dedup == "b2"))
            .unwrap();
        h.insert(i + 1, deliver("b1", "ID:3", 2));
        let r = check(&h);
        assert_eq!(r.producer_order.len(), 1, "{r:?}");

        // Delivered after a confirmed ack, and a delivery nobody sent.
        let mut h = clean();
        h.push(deliver("a1", "ID:1", 2));
        h.push(deliver("zz", "ID:99", 2));
        let r = check(&h);
        assert_eq!(r.redelivered_after_ack, ["ID:1"]);
        assert_eq!(r.unexpected, ["zz"]);
    }

    #[test]
    fn an_unknown_send_that_was_delivered_is_recovered_not_lost() {
        let mut h = clean();
        h.push(Event::Send {
            dedup: "c1".into(),
            producer: 3,
            seq: 1,
            group: None,
            outcome: Outcome::Unknown,
        });
        h.push(Event::Send {
            dedup: "c2".into(),
            producer: 3,
            seq: 2,
            group: None,
            outcome: Outcome::Unknown,
        });
        h.push(deliver("c1", "ID:7", 1));
        let r = check(&h);
        assert!(r.is_clean(), "{r:?}");
        assert_eq!((r.recovered, r.sent_unknown), (1, 2));
        // A redelivery (same message id) is neither a duplicate nor an order violation.
        let mut h = clean();
        h.insert(6, deliver("a1", "ID:1", 2));
        let r = check(&h);
        assert!(r.is_clean(), "{r:?}");
    }
}
