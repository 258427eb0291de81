//! Test fixtures that run real OpenSSH and drive terminals, for the end-to-end tests of the
//! gateway.
//!
//! The pieces:
//!
//! - [`Sshd`]: a private OpenSSH server on `127.0.0.1` with its own host key, config, client key
//!   and log, stopped when dropped. It stands in for a production target behind the gateway.
//! - [`Keypair`] and [`free_port`]: small building blocks the fixture uses and tests may reuse.
//! - [`ssh_cmd`], [`sftp_cmd`], [`scp_cmd`], [`rsync_cmd`] and [`ssh_base_args`]: the stock
//!   OpenSSH clients preconfigured for tests (no host-key prompts, no user config, no agent).
//! - [`Askpass`]: non-interactive password login through `SSH_ASKPASS`.
//! - [`Rsyslog`] and [`TestPki`]: a private rsyslogd receiving syslog over TCP and TLS (with
//!   a throw-away certificate authority), for the SIEM delivery tests.
//! - [`Pty`]: runs a program on a fresh pseudo-terminal so that tests can type, read, expect
//!   output and resize the window like a person at a terminal would.
//!
//! The fixtures expect the Debian layout of OpenSSH (`/usr/sbin/sshd`, `/usr/bin/ssh`,
//! `/usr/lib/openssh/sftp-server`, ...) and are written for tests that run as root, which is
//! what sshd needs to authenticate users. Nothing here panics on failure: every fallible
//! operation returns an [`anyhow::Result`] whose message carries the context needed to debug a
//! red test (sshd's log, the terminal output seen so far).

#![warn(missing_docs)]

mod client;
mod keys;
mod net;
mod pty;
mod rsyslog;
mod sshd;

pub use client::{
    Askpass, SCP, SFTP, SSH, destination, rsync_cmd, scp_cmd, sftp_cmd, ssh_base_args, ssh_cmd,
    ssh_password_args,
};
pub use keys::{Keypair, SSH_KEYGEN};
pub use net::{free_port, wait_for_port};
pub use pty::Pty;
pub use rsyslog::{RSYSLOGD, Rsyslog, TestPki};
pub use sshd::{SFTP_SERVER, SSHD, Sshd, current_user};
