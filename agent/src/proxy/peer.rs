//! Who is on the other end of a loopback TCP connection. On Linux the
//! client's socket is the one whose local address is our peer and whose
//! remote address is us; the kernel tells its owner's uid. It is asked by
//! one netlink `sock_diag` lookup of exactly that socket, and when netlink
//! cannot answer, by a scan of /proc/net/tcp and tcp6. Anything unexpected
//! is an error, and the listener then refuses the connection (fail closed).
//!
//! Why netlink first: the /proc tables list every socket on the machine,
//! TIME-WAIT ones included. With a few thousand of them (a busy runner)
//! one scan took about 9 ms, on the event loop, for every new connection
//! (bench/RESULTS.md: it was the p99 latency tail).

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
    #[cfg(target_os = "linux")]
    match diag::uid(local, peer) {
        Ok(uid) => return Ok(uid),
        Err(e) => tracing::debug!("sock_diag lookup failed ({e}); scanning /proc/net/tcp"),
    }
    scan_uid(local, peer)
}

#[cfg(target_os = "linux")]
mod diag {
    //! `SOCK_DIAG_BY_FAMILY` for one TCP socket (linux/inet_diag.h).
    use std::net::{IpAddr, SocketAddr};
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
        SockType,
    };

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_ERROR: u16 = 2;
    const NLM_F_REQUEST: u16 = 1;
    const IPPROTO_TCP: u8 = 6;
    const HEADER: usize = 16;
    /// family, state, timer, retrans, then the 48-byte socket id.
    const ID_AT: usize = HEADER + 4;
    const ID_LEN: usize = 48;
    /// After the id: expires, rqueue, wqueue, then uid.
    const UID_AT: usize = ID_AT + ID_LEN + 12;

    /// `inet_diag_sockid`: ports and addresses in network order.
    fn sockid(src: SocketAddr, dst: SocketAddr) -> [u8; ID_LEN] {
        let mut id = [0u8; ID_LEN];
        id[0..2].copy_from_slice(&src.port().to_be_bytes());
        id[2..4].copy_from_slice(&dst.port().to_be_bytes());
        let put = |buf: &mut [u8], ip: IpAddr| match ip {
            IpAddr::V4(v4) => buf[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => buf.copy_from_slice(&v6.octets()),
        };
        put(&mut id[4..20], src.ip());
        put(&mut id[20..36], dst.ip());
        // interface 0, cookie INET_DIAG_NOCOOKIE: no cookie check.
        id[40..48].copy_from_slice(&[0xff; 8]);
        id
    }

    #[cfg(test)]
    pub fn sockid_for_test(src: SocketAddr, dst: SocketAddr) -> [u8; ID_LEN] {
        sockid(src, dst)
    }

    pub fn uid(local: SocketAddr, peer: SocketAddr) -> Result<u32, String> {
        let (local, peer) = (super::canonical(local), super::canonical(peer));
        if local.is_ipv4() != peer.is_ipv4() {
            return Err("mixed address families".into());
        }
        let family: u8 = if peer.is_ipv4() { 2 } else { 10 };
        let id = sockid(peer, local);
        let mut req = Vec::with_capacity(HEADER + 8 + ID_LEN);
        req.extend_from_slice(&((HEADER + 8 + ID_LEN) as u32).to_ne_bytes());
        req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        req.extend_from_slice(&1u32.to_ne_bytes()); // seq
        req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
        req.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
        req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every TCP state
        req.extend_from_slice(&id);
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )
        .map_err(|e| format!("netlink socket: {e}"))?;
        sendto(
            fd.as_raw_fd(),
            &req,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )
        .map_err(|e| format!("netlink send: {e}"))?;
        let mut buf = [0u8; 512];
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())
            .map_err(|e| format!("netlink recv: {e}"))?;
        parse(&buf[..n], &id)
    }

    /// The uid from the kernel's answer, which must name the same socket.
    pub fn parse(msg: &[u8], id: &[u8; ID_LEN]) -> Result<u32, String> {
        let u16_at = |i: usize| msg.get(i..i + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
        let u32_at = |i: usize| {
            msg.get(i..i + 4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let len = u32_at(0).ok_or("short netlink answer")? as usize;
        if len > msg.len() || len < HEADER {
            return Err("truncated netlink answer".into());
        }
        match u16_at(4).ok_or("short netlink answer")? {
            NLMSG_ERROR => {
                let errno = u32_at(HEADER).ok_or("short netlink error")? as i32;
                Err(format!(
                    "sock_diag: {}",
                    nix::errno::Errno::from_raw(-errno).desc()
                ))
            }
            SOCK_DIAG_BY_FAMILY => {
                // Ports and addresses must be the ones asked for (the
                // cookie and interface are the kernel's to fill in).
                let got = msg.get(ID_AT..ID_AT + 36).ok_or("short sock_diag answer")?;
                if got != &id[..36] {
                    return Err("sock_diag answered about another socket".into());
                }
                u32_at(UID_AT).ok_or_else(|| "short sock_diag answer".into())
            }
            t => Err(format!("unexpected netlink message type {t}")),
        }
    }
}

/// The same answer from the /proc tables: every socket, one line each.
pub fn scan_uid(local: SocketAddr, peer: SocketAddr) -> Result<u32, PeerError> {
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
    fn finds_our_own_connection_by_netlink_and_by_scan() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let local = l.local_addr().expect("addr");
        let c = std::net::TcpStream::connect(local).expect("connect");
        let (_s, peer) = l.accept().expect("accept");
        assert_eq!(peer, c.local_addr().expect("addr"));
        let me = nix::unistd::getuid().as_raw();
        assert_eq!(diag::uid(local, peer), Ok(me));
        assert_eq!(scan_uid(local, peer), Ok(me));
        assert_eq!(peer_uid(local, peer), Ok(me));
        // A socket that does not exist is not found (fail closed).
        let ghost: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert!(diag::uid(local, ghost).is_err());
        assert!(peer_uid(local, ghost).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sock_diag_answers_are_checked() {
        let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let id = diag::sockid_for_test(peer, local);
        let answer = |id: &[u8]| {
            let mut m = vec![0u8; 16 + 4 + 48 + 12 + 8];
            let len = m.len() as u32;
            m[0..4].copy_from_slice(&len.to_ne_bytes());
            m[4..6].copy_from_slice(&20u16.to_ne_bytes());
            m[20..68].copy_from_slice(id);
            m[80..84].copy_from_slice(&1234u32.to_ne_bytes());
            m
        };
        assert_eq!(diag::parse(&answer(&id), &id), Ok(1234));
        // An answer about another socket is refused.
        let other = diag::sockid_for_test("127.0.0.1:40001".parse().expect("addr"), local);
        assert!(diag::parse(&answer(&other), &id).is_err());
        // Truncated and error answers are errors, not uid 0.
        assert!(diag::parse(&answer(&id)[..40], &id).is_err());
        let mut err = vec![0u8; 20];
        err[0..4].copy_from_slice(&20u32.to_ne_bytes());
        err[4..6].copy_from_slice(&2u16.to_ne_bytes());
        err[16..20].copy_from_slice(&(-2i32).to_ne_bytes());
        let e = diag::parse(&err, &id).expect_err("enoent");
        assert!(e.contains("No such file"), "{e}");
    }
}
