//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2): a
//! header a load balancer sends first on a connection to say who the real
//! client is. Pure parsing and encoding, no I/O ("sans-I/O"): shared by the
//! framework's accept path ([`Handler::on_preamble`](crate::Handler::on_preamble)
//! reads a header before `on_accept`, and before a TLS handshake) and by
//! applications that send headers to their own backends.
//!
//! - [`parse`] looks at the bytes received so far and says: not complete yet,
//!   complete (the header and its length; the bytes after it are the
//!   connection's payload), or an error. It can be called again with more
//!   bytes each time (bytes may arrive one at a time); it rejects a stream as
//!   soon as its first bytes cannot begin a header. Everything is bounded: a
//!   v1 line by its 107 bytes, a v2 header by [`MAX_HEADER_LEN`].
//! - [`encode_v1`] / [`encode_v2`] write a header for a pair of addresses.
//! - [`Cidr`] is an address block (`"10.0.0.0/8"`, `"::1"`) for the list of
//!   sources trusted to send headers.
//!
//! What a header gives ([`Header::addresses`]): the source and destination of
//! a proxied TCP connection over IPv4 or IPv6. A v1 `UNKNOWN` line, a v2
//! `LOCAL` command (a health check of the proxy itself), and a v2 header whose
//! family is `UNSPEC` or `AF_UNIX` or whose transport is not a stream carry no
//! address to use: the connection's own endpoints stand. v2 TLVs are checked
//! for structure (each within the header) and otherwise skipped.
//!
//! Never panics on any input (fuzzed: `apps/proxy/fuzz`, target
//! `proxy_protocol`).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    str::FromStr,
};

/// The v2 signature: the first 12 bytes of every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 header: `PROXY UNKNOWN ...` included, CRLF included.
pub const V1_MAX_LEN: usize = 107;

/// The longest v2 header accepted (16-byte fixed part, addresses and TLVs).
/// The format allows 65 551 bytes; what load balancers send is under 600
/// (AWS, GCP and Azure TLVs included), so a longer one is refused rather than
/// buffered.
pub const MAX_HEADER_LEN: usize = 4096;

const V1_PREFIX: &[u8] = b"PROXY ";

/// Which version of the protocol a header was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text line.
    V1,
    /// The binary header.
    V2,
}

/// A proxied connection's endpoints, as its proxy saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client.
    pub source: SocketAddr,
    /// The address the client connected to (the proxy's listener).
    pub destination: SocketAddr,
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// v1 or v2.
    pub version: Version,
    /// v2 `LOCAL`: the proxy's own connection (a health check); its endpoints
    /// are the connection's own.
    pub local: bool,
    /// The real endpoints; `None` when the header gives none to use (v1
    /// `UNKNOWN`, v2 `LOCAL`, `UNSPEC`, `AF_UNIX`, a datagram transport).
    pub addresses: Option<Addresses>,
}

/// What [`parse`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Every byte so far can begin a header: wait for more.
    Incomplete,
    /// A whole header, `len` bytes long; what follows is payload.
    Complete {
        /// The header.
        header: Header,
        /// Its length in bytes.
        len: usize,
    },
}

/// Why bytes are not a valid PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The first bytes are neither `PROXY ` nor the v2 signature.
    NotProxy,
    /// A v1 line without CRLF within 107 bytes, or a v2 header longer than
    /// [`MAX_HEADER_LEN`].
    TooLong,
    /// A v1 line that does not follow the grammar (what is wrong).
    BadV1(&'static str),
    /// A v2 header with a bad field (which).
    BadV2(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotProxy => f.write_str("not a PROXY protocol header"),
            Error::TooLong => f.write_str("PROXY header too long"),
            Error::BadV1(why) => write!(f, "bad PROXY v1 header: {why}"),
            Error::BadV2(why) => write!(f, "bad PROXY v2 header: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// Parses the header at the start of `buf` (all bytes received so far).
pub fn parse(buf: &[u8]) -> Result<Parsed, Error> {
    let Some(&first) = buf.first() else {
        return Ok(Parsed::Incomplete);
    };
    if first == V1_PREFIX[0] {
        parse_v1(buf)
    } else if first == V2_SIGNATURE[0] {
        parse_v2(buf)
    } else {
        Err(Error::NotProxy)
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, Error> {
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] != V1_PREFIX[..n] {
        return Err(Error::NotProxy);
    }
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX_LEN {
            Err(Error::TooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Err(Error::BadV1("line not ended by CRLF"));
    }
    let line = &window[V1_PREFIX.len().min(lf - 1)..lf - 1];
    let header = v1_fields(line)?;
    Ok(Parsed::Complete {
        header,
        len: lf + 1,
    })
}

fn v1_fields(line: &[u8]) -> Result<Header, Error> {
    let text = std::str::from_utf8(line).map_err(|_| Error::BadV1("not ASCII"))?;
    let mut fields = text.split(' ');
    let proto = fields.next().unwrap_or("");
    let v4 = match proto {
        "TCP4" => true,
        "TCP6" => false,
        // The rest of the line (if any) is to be ignored.
        "UNKNOWN" => {
            return Ok(Header {
                version: Version::V1,
                local: false,
                addresses: None,
            })
        }
        _ => return Err(Error::BadV1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(Error::BadV1("expected four fields after the protocol"));
    };
    let ip = |s: &str| -> Result<IpAddr, Error> {
        if v4 {
            Ipv4Addr::from_str(s)
                .map(IpAddr::V4)
                .map_err(|_| Error::BadV1("bad IPv4 address"))
        } else {
            Ipv6Addr::from_str(s)
                .map(IpAddr::V6)
                .map_err(|_| Error::BadV1("bad IPv6 address"))
        }
    };
    let (src, dst) = (ip(src)?, ip(dst)?);
    let (sport, dport) = (v1_port(sport)?, v1_port(dport)?);
    Ok(Header {
        version: Version::V1,
        local: false,
        addresses: Some(Addresses {
            source: SocketAddr::new(src, sport),
            destination: SocketAddr::new(dst, dport),
        }),
    })
}

/// A port: 1 to 5 digits, no leading zero (but "0"), at most 65535.
fn v1_port(s: &str) -> Result<u16, Error> {
    let ok = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if !ok {
        return Err(Error::BadV1("bad port"));
    }
    s.parse().map_err(|_| Error::BadV1("port over 65535"))
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, Error> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(Error::NotProxy);
    }
    if buf.len() < 16 {
        // Check the version/command byte as soon as it is here.
        if let Some(&vc) = buf.get(12) {
            v2_command(vc)?;
        }
        return Ok(Parsed::Incomplete);
    }
    let local = v2_command(buf[12])?;
    let fam = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if total > MAX_HEADER_LEN {
        return Err(Error::TooLong);
    }
    let (family, transport) = (fam >> 4, fam & 0x0f);
    let need = match family {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Err(Error::BadV2("unknown address family")),
    };
    if transport > 2 {
        return Err(Error::BadV2("unknown transport protocol"));
    }
    if len < need {
        return Err(Error::BadV2("length too short for the address family"));
    }
    if buf.len() < total {
        return Ok(Parsed::Incomplete);
    }
    let body = &buf[16..total];
    check_tlvs(&body[need..])?;
    let stream = transport == 1;
    let addresses = match family {
        _ if local || !stream => None,
        1 => {
            let ip = |o: usize| Ipv4Addr::new(body[o], body[o + 1], body[o + 2], body[o + 3]);
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            Some(Addresses {
                source: SocketAddr::V4(SocketAddrV4::new(ip(0), port(8))),
                destination: SocketAddr::V4(SocketAddrV4::new(ip(4), port(10))),
            })
        }
        2 => {
            let ip = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&body[o..o + 16]);
                Ipv6Addr::from(a)
            };
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            Some(Addresses {
                source: SocketAddr::V6(SocketAddrV6::new(ip(0), port(32), 0, 0)),
                destination: SocketAddr::V6(SocketAddrV6::new(ip(16), port(34), 0, 0)),
            })
        }
        // UNSPEC, AF_UNIX: nothing to use.
        _ => None,
    };
    Ok(Parsed::Complete {
        header: Header {
            version: Version::V2,
            local,
            addresses,
        },
        len: total,
    })
}

/// The version/command byte: `true` for LOCAL, `false` for PROXY.
fn v2_command(vc: u8) -> Result<bool, Error> {
    if vc >> 4 != 2 {
        return Err(Error::BadV2("version is not 2"));
    }
    match vc & 0x0f {
        0 => Ok(true),
        1 => Ok(false),
        _ => Err(Error::BadV2("unknown command")),
    }
}

/// TLVs (type, 16-bit length, value): each must fit in what remains.
fn check_tlvs(mut rest: &[u8]) -> Result<(), Error> {
    while !rest.is_empty() {
        if rest.len() < 3 {
            return Err(Error::BadV2("truncated TLV"));
        }
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let Some(next) = rest.get(3 + len..) else {
            return Err(Error::BadV2("TLV longer than the header"));
        };
        rest = next;
    }
    Ok(())
}

/// Both addresses of one family: an IPv4 one is mapped into IPv6 when the
/// other is IPv6 (a header carries one family).
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    let v6 = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        v6 => v6,
    };
    match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => {
            (src, dst)
        }
        _ => (v6(src), v6(dst)),
    }
}

/// Appends the v1 line for a connection from `source` to `destination`.
pub fn encode_v1(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let (s, d) = same_family(source, destination);
    let proto = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "PROXY {proto} {} {} {} {}\r\n",
        s.ip(),
        d.ip(),
        s.port(),
        d.port()
    );
}

/// Appends the v2 header (command PROXY, TCP over IPv4 or IPv6, no TLV) for a
/// connection from `source` to `destination`.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    let (s, d) = same_family(source, destination);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21);
    match (s, d) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        _ => {
            let ip6 = |a: SocketAddr| match a {
                SocketAddr::V6(a) => a.ip().octets(),
                SocketAddr::V4(a) => a.ip().to_ipv6_mapped().octets(),
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&ip6(s));
            out.extend_from_slice(&ip6(d));
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
    }
}

/// Appends a v2 `LOCAL` header (no addresses): a connection of the proxy's
/// own, such as a health check.
pub fn encode_v2_local(out: &mut Vec<u8>) {
    out.extend_from_slice(&V2_SIGNATURE);
    out.extend_from_slice(&[0x20, 0x00, 0, 0]);
}

/// An address block: `"10.0.0.0/8"`, `"2001:db8::/32"`, or one address
/// (`"127.0.0.1"`, a /32 or /128). An IPv4 block also matches IPv4-mapped
/// IPv6 addresses (`::ffff:10.1.2.3`), as a dual-stack listener sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr = IpAddr::from_str(ip)
            .map_err(|_| format!("{s:?} is not an address or address/prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Feeds `bytes` one at a time: Incomplete until the last one.
    fn byte_by_byte(bytes: &[u8]) -> Header {
        for i in 0..bytes.len() {
            assert_eq!(parse(&bytes[..i]), Ok(Parsed::Incomplete), "at {i}");
        }
        match parse(bytes) {
            Ok(Parsed::Complete { header, len }) => {
                assert_eq!(len, bytes.len());
                header
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn v1_tcp4_and_tcp6_split_anywhere() {
        let h = byte_by_byte(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n");
        assert_eq!(
            h.addresses,
            Some(Addresses {
                source: sa("192.0.2.1:56324"),
                destination: sa("198.51.100.2:443")
            })
        );
        let h = byte_by_byte(b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n");
        assert_eq!(h.addresses.unwrap().source, sa("[2001:db8::1]:65535"));
        let h = byte_by_byte(b"PROXY UNKNOWN whatever follows\r\n");
        assert_eq!((h.version, h.addresses), (Version::V1, None));
        let h = byte_by_byte(b"PROXY UNKNOWN\r\n");
        assert_eq!(h.addresses, None);
    }

    #[test]
    fn v1_payload_follows() {
        let mut b = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n".to_vec();
        let Ok(Parsed::Complete { len, .. }) = parse(&b) else {
            panic!()
        };
        assert_eq!(&b[len..], b"GET / HTTP/1.1\r\n");
        b.truncate(5);
        assert_eq!(parse(&b), Ok(Parsed::Incomplete));
    }

    #[test]
    fn v1_refusals() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY \r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(Error::BadV1(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse(b"PROXZ"), Err(Error::NotProxy));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(Error::NotProxy));
        assert_eq!(parse(b"\x16\x03\x01"), Err(Error::NotProxy));
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX_LEN - 1, b'x');
        assert_eq!(parse(&long), Ok(Parsed::Incomplete));
        long.push(b'x');
        assert_eq!(parse(&long), Err(Error::TooLong));
        // 107 bytes with its CRLF is the longest accepted.
        long.truncate(V1_MAX_LEN - 2);
        long.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse(&long),
            Ok(Parsed::Complete { len: 107, .. })
        ));
    }

    #[test]
    fn v2_round_trips_and_splits() {
        for (s, d) in [
            ("10.1.2.3:4000", "10.0.0.1:443"),
            ("[2001:db8::5]:1", "[::1]:8080"),
            ("10.1.2.3:4000", "[::1]:8080"),
        ] {
            let mut b = Vec::new();
            encode_v2(sa(s), sa(d), &mut b);
            let h = byte_by_byte(&b);
            let a = h.addresses.unwrap();
            assert_eq!(h.version, Version::V2);
            assert!(!h.local);
            assert_eq!(a.source.port(), sa(s).port());
            assert!(Cidr::from_str(&sa(s).ip().to_string())
                .unwrap()
                .contains(a.source.ip()));
            let mut v1 = Vec::new();
            encode_v1(sa(s), sa(d), &mut v1);
            assert_eq!(byte_by_byte(&v1).addresses, h.addresses);
        }
        let mut b = Vec::new();
        encode_v2_local(&mut b);
        let h = byte_by_byte(&b);
        assert!(h.local);
        assert_eq!(h.addresses, None);
    }

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.push(cmd);
        b.push(fam);
        b.extend_from_slice(&(body.len() as u16).to_be_bytes());
        b.extend_from_slice(body);
        b
    }

    #[test]
    fn v2_tlvs_unix_unspec_and_refusals() {
        // IPv4 + a TLV (type 0x04 NOOP, 3 bytes) + a zero-length TLV.
        let mut body = vec![1, 2, 3, 4, 5, 6, 7, 8, 0, 80, 1, 187];
        body.extend_from_slice(&[0x04, 0, 3, 9, 9, 9, 0x01, 0, 0]);
        let h = byte_by_byte(&v2(0x21, 0x11, &body));
        assert_eq!(h.addresses.unwrap().source, sa("1.2.3.4:80"));
        assert_eq!(
            byte_by_byte(&v2(0x21, 0x31, &[0; 216])).addresses,
            None,
            "AF_UNIX"
        );
        assert_eq!(byte_by_byte(&v2(0x21, 0x00, &[])).addresses, None);
        assert_eq!(
            byte_by_byte(&v2(0x21, 0x12, &body)).addresses,
            None,
            "datagram"
        );
        // LOCAL with addresses: ignored.
        assert_eq!(byte_by_byte(&v2(0x20, 0x11, &body)).addresses, None);
        for (b, why) in [
            (v2(0x11, 0x11, &body), "version"),
            (v2(0x22, 0x11, &body), "command"),
            (v2(0x21, 0x41, &body), "family"),
            (v2(0x21, 0x13, &body), "transport"),
            (v2(0x21, 0x11, &body[..11]), "short"),
            (v2(0x21, 0x21, &body), "short v6"),
            (v2(0x21, 0x11, &body[..14]), "truncated tlv"),
            (v2(0x21, 0x11, &body[..16]), "tlv overrun"),
        ] {
            assert!(matches!(parse(&b), Err(Error::BadV2(_))), "{why}");
        }
        // The version is refused with the 13th byte, before the length.
        assert!(matches!(
            parse(&v2(0x31, 0x11, &body)[..13]),
            Err(Error::BadV2(_))
        ));
        let long = v2(0x21, 0x11, &vec![0; MAX_HEADER_LEN]);
        assert_eq!(parse(&long[..16]), Err(Error::TooLong));
        assert_eq!(parse(b"\r\n\r\n\0\r\nQUIX"), Err(Error::NotProxy));
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.255.1.2".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!("::/0"
            .parse::<Cidr>()
            .unwrap()
            .contains("::1".parse().unwrap()));
        for bad in ["10.0.0.0/33", "::/129", "x", "10.0.0.0/", "10.0.0.0/-1"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(c.to_string(), "10.0.0.0/8");
    }
}
