//! Loopback port helpers.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Returns a TCP port on `127.0.0.1` that was free a moment ago.
///
/// The port is found by binding port 0 and releasing the socket, so another process may take it
/// before the caller binds it; fixtures that use it retry on "address in use". Returns 0 only if
/// the kernel refuses to hand out an ephemeral port at all, which makes the later bind fail loudly
/// instead of this function panicking.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or(0)
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`, polling every 20 ms.
///
/// Each successful probe is a real connection that is closed at once; servers may log it.
pub fn wait_for_port(port: u16, timeout: Duration) -> Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(err) if Instant::now() >= deadline => {
                return Err(err).with_context(|| {
                    format!("nothing accepted connections on {addr} within {timeout:?}")
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Fails unless `port` is a usable port number.
pub(crate) fn check_port(port: u16) -> Result<()> {
    if port == 0 {
        bail!("no free loopback port could be found");
    }
    Ok(())
}
