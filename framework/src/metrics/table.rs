//! The per-shard counters, declared once.
//!
//! `shard_counters!` takes one table — field, Prometheus name, type, help — and
//! makes everything that must agree with it: the live [`ShardMetrics`] (one
//! [`Counter`] per shard-written field), the [`ShardMetricsSnapshot`] copy (those
//! fields and the mailbox ones), the sum across shards, the mailbox fields' fill
//! from [`MailboxSnapshot`], the Prometheus rows and the list of their names. A
//! counter added to the table is therefore exported on `/metrics` without another
//! edit, and one cannot be counted but left out.

use std::fmt;

use super::{Counter, PromWriter};
use crate::shard::mailbox::MailboxSnapshot;

/// Generates the per-shard counter types from the table below.
///
/// `shard` rows are [`Counter`]s the shard itself writes; `mailbox` rows are read
/// from the shard's mailboxes ([`MailboxSnapshot`] field after `<-`). Each row is
/// `field: counter|gauge "prometheus_name" "Help text, also the field's doc."`.
macro_rules! shard_counters {
    (
        shard {
            $( $field:ident : $kind:ident $name:literal $help:literal, )*
        }
        mailbox {
            $( $mfield:ident <- $src:ident : $mkind:ident $mname:literal $mhelp:literal, )*
        }
    ) => {
        /// Live counters of one shard. Read them with [`ShardMetrics::snapshot`].
        #[derive(Default)]
        pub struct ShardMetrics {
            $(
                #[doc = $help]
                pub(crate) $field: Counter,
            )*
        }

        /// A point-in-time copy of one shard's counters (each read individually;
        /// the set is not one atomic snapshot).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct ShardMetricsSnapshot {
            $(
                #[doc = $help]
                pub $field: u64,
            )*
            $(
                #[doc = $mhelp]
                pub $mfield: u64,
            )*
        }

        impl ShardMetrics {
            /// Reads every counter (each individually; the set is not one atomic
            /// snapshot). The mailbox fields are zero here: they are filled by
            /// [`Metrics::snapshot_shard`](crate::Metrics::snapshot_shard).
            pub fn snapshot(&self) -> ShardMetricsSnapshot {
                ShardMetricsSnapshot {
                    $( $field: self.$field.get(), )*
                    ..ShardMetricsSnapshot::default()
                }
            }

            /// The live counters in table order (for tests).
            #[cfg(test)]
            fn counters(&self) -> Vec<&Counter> {
                vec![$( &self.$field, )*]
            }
        }

        impl ShardMetricsSnapshot {
            /// The Prometheus name of every field, in declaration order: each is
            /// written by [`Metrics::write_prometheus`](crate::Metrics::write_prometheus)
            /// (and so served on the admin endpoint's `/metrics`), labelled `shard`.
            pub const PROMETHEUS_NAMES: &'static [&'static str] = &[$( $name, )* $( $mname, )*];

            /// The rows that write this snapshot: (name, help, type, value).
            const ROWS: &'static [Row] = &[
                $( Row { name: $name, help: $help, kind: kind!($kind), get: |s| s.$field, }, )*
                $( Row { name: $mname, help: $mhelp, kind: kind!($mkind), get: |s| s.$mfield, }, )*
            ];

            /// This snapshot with the mailbox fields taken from `b`.
            pub(crate) fn with_mailbox(mut self, b: MailboxSnapshot) -> Self {
                $( self.$mfield = b.$src; )*
                self
            }

            /// Field-wise sum (wrapping, as the counters themselves do).
            pub(crate) fn sum(self, o: Self) -> Self {
                ShardMetricsSnapshot {
                    $( $field: self.$field.wrapping_add(o.$field), )*
                    $( $mfield: self.$mfield.wrapping_add(o.$mfield), )*
                }
            }
        }
    };
}

/// Whether a row is a Prometheus counter (only goes up) or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// A row's type as the table spells it: `counter` or `gauge` (anything else does
/// not compile).
macro_rules! kind {
    (counter) => {
        Kind::Counter
    };
    (gauge) => {
        Kind::Gauge
    };
}

/// One Prometheus metric of the table.
struct Row {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    get: fn(&ShardMetricsSnapshot) -> u64,
}

shard_counters! {
    shard {
        conns_live: gauge "shardline_connections"
            "Connections open now (accepted or connected, not yet closed).",
        conns_accepted: counter "shardline_connections_accepted_total"
            "Connections accepted.",
        conns_connected: counter "shardline_connections_connected_total"
            "Outbound connections established.",
        conns_closed: counter "shardline_connections_closed_total"
            "Connections closed, for any reason.",
        conns_inbound_closed: counter "shardline_connections_inbound_closed_total"
            "Accepted connections closed (the handoff acceptor's measure of a shard's load is those it handed over minus these).",
        closed_send_queue_full: counter "shardline_connections_closed_send_queue_full_total"
            "Connections closed because their send queue passed the hard limit.",
        bytes_in: counter "shardline_received_bytes_total"
            "Bytes read from sockets.",
        bytes_out: counter "shardline_sent_bytes_total"
            "Bytes written to sockets.",
        loop_turns: counter "shardline_loop_turns_total"
            "Event-loop turns.",
        syscalls: counter "shardline_syscalls_total"
            "Blocking waits and submissions into the kernel (io_uring_enter, epoll_wait).",
        handler_panics: counter "shardline_handler_panics_total"
            "Handler callbacks that panicked.",
        pool_bytes: gauge "shardline_read_pool_bytes"
            "Bytes of read-buffer pool the shard holds.",
        pool_off_node_pages: gauge "shardline_read_pool_off_node_pages"
            "Read-buffer pool pages on another NUMA node than the shard's (0 is right).",
        relays_started: counter "shardline_relays_started_total"
            "Splice relays started (Ctx::splice_into; each got a pipe).",
        bytes_spliced: counter "shardline_spliced_bytes_total"
            "Bytes moved through splice relay pipes (also counted as received and sent).",
        tls_handshakes: counter "shardline_tls_handshakes_total"
            "TLS handshakes completed (inbound and outbound).",
        tls_resumed: counter "shardline_tls_resumed_total"
            "TLS handshakes that resumed a session (a ticket).",
        tls_failed: counter "shardline_tls_failed_total"
            "TLS sessions ended by bad input or a failed handshake (alert sent where possible).",
        tls_timeouts: counter "shardline_tls_handshake_timeouts_total"
            "TLS handshakes not finished within the handshake timeout.",
        tls_handshaking: gauge "shardline_tls_handshakes_in_progress"
            "TLS handshakes in progress now (at most the per-shard cap).",
        tls_waiting: gauge "shardline_tls_handshakes_waiting"
            "Connections waiting for a handshake slot (the per-shard cap was reached).",
        proxy_headers: counter "shardline_proxy_headers_total"
            "PROXY protocol headers read (connections announced with the header's addresses).",
        proxy_headers_failed: counter "shardline_proxy_headers_failed_total"
            "Connections closed for a malformed, oversize or late PROXY header, or EOF before it.",
        preamble_refused: counter "shardline_preamble_refused_total"
            "Connections refused at accept by Handler::on_preamble (e.g. an untrusted source).",
    }
    mailbox {
        msgs_sent <- sent: counter "shardline_mailbox_sent_total"
            "Messages this shard posted to shard mailboxes.",
        msgs_received <- received: counter "shardline_mailbox_received_total"
            "Messages (and handed-off connections) this shard took from its mailboxes.",
        doorbell_writes <- doorbell_writes: counter "shardline_mailbox_doorbell_writes_total"
            "Doorbell (eventfd) writes this shard made to wake another.",
        mailbox_full <- full: counter "shardline_mailbox_full_total"
            "Posts from this shard that met a full mailbox.",
    }
}

impl ShardMetricsSnapshot {
    /// Writes one sample of every field to `w`, each labelled `labels`.
    pub(crate) fn write_prometheus(&self, w: &mut PromWriter, labels: &[(&str, &str)]) {
        for row in Self::ROWS {
            let v = (row.get)(self);
            match row.kind {
                Kind::Counter => w.counter(row.name, row.help, labels, v),
                Kind::Gauge => w.gauge(row.name, row.help, labels, v),
            }
        }
    }
}

impl fmt::Debug for ShardMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn every_field_is_written_once_under_its_name_with_its_value() {
        let m = ShardMetrics::default();
        let counters = m.counters();
        // Every field gets a different value: shard rows 100, 101, ... in table
        // order, then the mailbox rows (declared sent, received, doorbell, full).
        for (i, c) in counters.iter().enumerate() {
            c.set(100 + i as u64);
        }
        let n = counters.len() as u64;
        let s = m.snapshot().with_mailbox(MailboxSnapshot {
            sent: 100 + n,
            received: 101 + n,
            doorbell_writes: 102 + n,
            full: 103 + n,
        });
        let mut w = PromWriter::new();
        s.write_prometheus(&mut w, &[("shard", "3")]);
        let text = w.finish();

        let names = ShardMetricsSnapshot::PROMETHEUS_NAMES;
        assert_eq!(names.len(), counters.len() + 4, "every field has a name");
        let samples: HashMap<&str, &str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_once(' ').expect("sample line"))
            .collect();
        assert_eq!(samples.len(), names.len(), "one sample per field:\n{text}");
        for (i, name) in names.iter().enumerate() {
            let key = format!("{name}{{shard=\"3\"}}");
            assert_eq!(
                samples.get(key.as_str()),
                Some(&(100 + i).to_string().as_str()),
                "{name}:\n{text}"
            );
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} is a {kind}:\n{text}"
            );
            assert_eq!(
                text.matches(&format!("# HELP {name} ")).count(),
                1,
                "{name}"
            );
        }
    }

    #[test]
    fn sums_add_every_field() {
        let a = ShardMetrics::default();
        let b = ShardMetrics::default();
        for (i, (x, y)) in a.counters().into_iter().zip(b.counters()).enumerate() {
            x.set(i as u64);
            y.set(1000 * i as u64);
        }
        let mail = |k| MailboxSnapshot {
            sent: k,
            received: 2 * k,
            doorbell_writes: 3 * k,
            full: 4 * k,
        };
        let sum = a
            .snapshot()
            .with_mailbox(mail(1))
            .sum(b.snapshot().with_mailbox(mail(10)));
        let want = ShardMetrics::default();
        for (i, c) in want.counters().into_iter().enumerate() {
            c.set(1001 * i as u64);
        }
        assert_eq!(sum, want.snapshot().with_mailbox(mail(11)));
        assert_eq!(
            ShardMetricsSnapshot {
                loop_turns: u64::MAX,
                ..Default::default()
            }
            .sum(ShardMetricsSnapshot {
                loop_turns: 2,
                ..Default::default()
            })
            .loop_turns,
            1,
            "wraps like the counters"
        );
    }
}
