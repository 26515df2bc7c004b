//! Cloud host names on loopback, for real SDKs that insist on their own
//! endpoints (`https://<vault>.vault.azure.net`, `https://storage.googleapis.com`).
//!
//! `with_private_hosts` runs a closure on a new thread that has moved into
//! its own network and mount namespaces: a fresh loopback device (so every
//! port, 443 included, is free and no other test can take it), and an
//! `/etc/hosts` that maps the given names to 127.0.0.1. Every process the
//! closure starts (the peers, lanyard, the SDK client) inherits both, so
//! the client, lanyard's upstream dial and the peer all agree, and nothing
//! in lanyard or the SDK is changed for the test. The namespaces end with
//! the thread; the machine's own `/etc/hosts` is never touched.
//!
//! It needs CAP_SYS_ADMIN (root here). Where the kernel or container
//! refuses, it returns the reason, and the caller prints why it skips.

use std::io::Write;
use std::process::Command;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// Moves the calling thread into new namespaces with `names` on 127.0.0.1.
fn enter(names: &[&str]) -> Result<tempfile::NamedTempFile, String> {
    let mut text = String::from("127.0.0.1 localhost\n::1 localhost ip6-localhost\n");
    for name in names {
        text.push_str(&format!("127.0.0.1 {name}\n"));
    }
    enter_with(&text, &[])
}

/// Moves the calling thread into new namespaces whose `/etc/hosts` is
/// `text` and whose loopback device also carries `addrs` (e.g.
/// `10.99.0.1/32`: local, but not a loopback address).
fn enter_with(text: &str, addrs: &[&str]) -> Result<tempfile::NamedTempFile, String> {
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare(CLONE_NEWNET|CLONE_NEWNS) refused: {e}"))?;
    // Why: without this a bind mount below could propagate to the host's
    // mount namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private refused: {e}"))?;
    let mut hosts = tempfile::NamedTempFile::new().map_err(|e| format!("hosts file: {e}"))?;
    hosts
        .write_all(text.as_bytes())
        .map_err(|e| format!("hosts file: {e}"))?;
    mount(
        Some(hosts.path()),
        "/etc/hosts",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind-mounting /etc/hosts refused: {e}"))?;
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("ip link set lo up: {e} (iproute2 is needed)"))?;
    if !up.success() {
        return Err(format!("ip link set lo up: {up}"));
    }
    for addr in addrs {
        let added = Command::new("ip")
            .args(["addr", "add", addr, "dev", "lo"])
            .status()
            .map_err(|e| format!("ip addr add {addr}: {e}"))?;
        if !added.success() {
            return Err(format!("ip addr add {addr} dev lo: {added}"));
        }
    }
    Ok(hosts)
}

/// Runs `body` in private namespaces whose `/etc/hosts` is `hosts` and
/// whose loopback device also carries `addrs`; otherwise as
/// [`with_private_hosts`].
pub fn with_hosts_file<T: Send + 'static>(
    hosts: &str,
    addrs: &[&str],
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let hosts = hosts.to_owned();
    let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    in_thread(
        move || {
            let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
            enter_with(&hosts, &addrs)
        },
        body,
    )
}

/// Runs `body` with `names` resolving to 127.0.0.1 in private namespaces;
/// `Err(reason)` when this machine cannot make them (the caller prints it
/// and skips). A panic in `body` is the test's failure, re-raised here.
pub fn with_private_hosts<T: Send + 'static>(
    names: &[&str],
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    in_thread(
        move || {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            enter(&names)
        },
        body,
    )
}

/// `body` on a new thread, after `setup` has moved that thread into its
/// namespaces (the file it returns lives until `body` ends).
fn in_thread<T: Send + 'static>(
    setup: impl FnOnce() -> Result<tempfile::NamedTempFile, String> + Send + 'static,
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let thread = std::thread::Builder::new()
        .name("private-hosts".into())
        .spawn(move || {
            let hosts = setup()?;
            let out = body();
            drop(hosts);
            Ok(out)
        })
        .expect("spawn the namespace thread");
    match thread.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A test CA and a leaf it signed for `names`, as PEM files under `dir`:
/// (ca, cert, key). The peer serves the leaf; lanyard trusts the CA
/// through `[upstream] extra_ca`.
pub fn ca_and_leaf(
    dir: &std::path::Path,
    names: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "lanyard test cloud CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca, ca_key);
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut leaf = CertificateParams::new(names).expect("leaf");
    leaf.use_authority_key_identifier_extension = true;
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
    let paths = (
        dir.join("cloud-ca.pem"),
        dir.join("cloud.pem"),
        dir.join("cloud.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).expect("ca pem");
    std::fs::write(&paths.1, leaf_cert.pem()).expect("leaf pem");
    std::fs::write(&paths.2, leaf_key.serialize_pem()).expect("leaf key");
    paths
}
