//! The harness that puts cloud host names on loopback for unmodified SDKs
//! (tests/common/netns.rs) does what it says, and nothing outside it.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};

use common::netns::with_private_hosts;

const NAME: &str = "lanyard-test.vault.azure.net";

#[test]
fn a_private_name_reaches_a_private_port_443_and_the_host_is_untouched() {
    let before = std::fs::read_to_string("/etc/hosts").expect("read /etc/hosts");
    let inside = with_private_hosts(&[NAME], || {
        let addrs: Vec<_> = (NAME, 443).to_socket_addrs().expect("resolve").collect();
        let listener = TcpListener::bind("127.0.0.1:443").expect("bind 443 in the namespace");
        let mut client = TcpStream::connect((NAME, 443)).expect("connect by name");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(b"ping").expect("write");
        let mut got = [0u8; 4];
        server.read_exact(&mut got).expect("read");
        (addrs, got)
    });
    let (addrs, got) = match inside {
        Ok(v) => v,
        Err(why) => {
            eprintln!("SKIPPED private hosts: {why}");
            return;
        }
    };
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    assert!(addrs[0].ip().is_loopback(), "{addrs:?}");
    assert_eq!(&got, b"ping");
    // Outside the namespace: the machine's file is as it was.
    let after = std::fs::read_to_string("/etc/hosts").expect("read /etc/hosts");
    assert_eq!(before, after);
    assert!(!after.contains(NAME));
}
