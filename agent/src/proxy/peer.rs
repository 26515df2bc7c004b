//! Who is on the other end of a loopback TCP connection. On Linux the
//! kernel lists every TCP socket with its owner's uid in /proc/net/tcp and
//! tcp6; the client's socket is the entry whose local address is our peer
//! and whose remote address is us. Anything unexpected is an error, and the
//! listener then refuses the connection (fail closed).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    #[error("cannot read {0}: {1}")]
    Read(&'static str, String),
    #[error("no socket {peer} → {local} in /proc/net/tcp or tcp6")]
    NotFound { peer: SocketAddr, local: SocketAddr },
}

fn canonical(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6), as the kernel
/// prints them: each 32-bit word in host byte order.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |h: &str| u32::from_str_radix(h, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(canonical(SocketAddr::new(ip, port)))
}

/// Find the uid in one table's text.
pub fn find_uid(table: &str, local: SocketAddr, peer: SocketAddr) -> Option<u32> {
    let (local, peer) = (canonical(local), canonical(peer));
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid ...
        if f.len() < 8 {
            return None;
        }
        (parse_addr(f[1])? == peer && parse_addr(f[2])? == local)
            .then(|| f[7].parse().ok())
            .flatten()
    })
}

/// The uid owning the client socket of the connection `peer` → `local`.
pub fn peer_uid(local: SocketAddr, peer: SocketAddr) -> Result<u32, PeerError> {
    let files: [&'static str; 2] = if peer.is_ipv4() {
        ["/proc/net/tcp", "/proc/net/tcp6"]
    } else {
        ["/proc/net/tcp6", "/proc/net/tcp"]
    };
    for f in files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            // A kernel without IPv6 has no tcp6; the other table decides.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(PeerError::Read(f, e.to_string())),
        };
        if let Some(uid) = find_uid(&text, local, peer) {
            return Ok(uid);
        }
    }
    Err(PeerError::NotFound { peer, local })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_format() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 1 1 0\n\
   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1001        0 2 1 0\n";
        let local: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let peer: SocketAddr = "127.0.0.1:54321".parse().expect("addr");
        // The client's socket is the second row (local = peer).
        assert_eq!(find_uid(table, local, peer), Some(1001));
        assert_eq!(find_uid(table, peer, local), Some(1000));
        let other: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert_eq!(find_uid(table, local, other), None);
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        // ::1 port 443, as printed on little-endian machines.
        let a = parse_addr("00000000000000000000000001000000:01BB").expect("v6");
        if cfg!(target_endian = "little") {
            assert_eq!(a, "[::1]:443".parse().expect("addr"));
        }
        // ::ffff:127.0.0.1 folds to 127.0.0.1.
        let m = parse_addr("0000000000000000FFFF00000100007F:0050").expect("mapped");
        if cfg!(target_endian = "little") {
            assert_eq!(m, "127.0.0.1:80".parse().expect("addr"));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn finds_our_own_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (_s, peer) = l.accept().expect("accept");
        assert_eq!(peer, c.local_addr().expect("addr"));
        let uid = peer_uid(l.local_addr().expect("addr"), peer).expect("found");
        assert_eq!(uid, nix::unistd::getuid().as_raw());
    }
}
