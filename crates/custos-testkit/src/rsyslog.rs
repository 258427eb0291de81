//! A private rsyslogd on loopback that receives syslog over TCP (octet-counted) and,
//! optionally, TLS (with a test certificate authority made by `openssl`), and writes each
//! message it receives, raw, as one line of a file.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::{free_port, wait_for_port};

/// The rsyslog daemon (Debian's `rsyslog` package; TLS needs `rsyslog-gnutls`).
pub const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// A test certificate authority and a server certificate for `localhost` / `127.0.0.1`.
pub struct TestPki {
    /// The CA certificate (PEM) clients trust.
    pub ca_cert: PathBuf,
    /// The server certificate (PEM), signed by the CA.
    pub server_cert: PathBuf,
    /// The server's private key (PEM).
    pub server_key: PathBuf,
    /// A client certificate (PEM) signed by the CA, for receivers that require one.
    pub client_cert: PathBuf,
    /// The client's private key (PEM).
    pub client_key: PathBuf,
}

impl TestPki {
    /// Creates a CA and a server certificate in `dir` with the `openssl` command.
    pub fn create(dir: &Path) -> Result<TestPki> {
        std::fs::create_dir_all(dir)?;
        let p = |n: &str| dir.join(n);
        let run = |args: &[&str]| -> Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .context("cannot run openssl")?;
            if !out.status.success() {
                bail!(
                    "openssl {} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(())
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Custos Test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])?;
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ])?;
        std::fs::write(
            p("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        )?;
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ])?;
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=custos-gateway",
        ])?;
        std::fs::write(
            p("client.ext"),
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        )?;
        run(&[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.pem",
            "-days",
            "2",
            "-extfile",
            "client.ext",
        ])?;
        Ok(TestPki {
            ca_cert: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
        })
    }
}

/// A running rsyslogd, stopped when dropped.
pub struct Rsyslog {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// TCP port (octet-counted syslog).
    pub tcp_port: u16,
    /// TLS port, when started with a PKI.
    pub tls_port: Option<u16>,
    conf: PathBuf,
}

impl Rsyslog {
    /// Starts rsyslogd listening on loopback TCP, and TLS when `pki` is given.
    pub fn start(pki: Option<&TestPki>) -> Result<Rsyslog> {
        Rsyslog::start_with(pki, false)
    }

    /// Like [`Rsyslog::start`]; with `client_auth` the TLS listener accepts only clients
    /// presenting a certificate signed by the PKI's CA.
    pub fn start_with(pki: Option<&TestPki>, client_auth: bool) -> Result<Rsyslog> {
        let dir = tempfile::Builder::new()
            .prefix("custos-rsyslog-")
            .tempdir()?;
        let tcp_port = free_port();
        let tls_port = pki.map(|_| free_port());
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work)?;
        let out = dir.path().join("messages.log");
        let mut conf = format!(
            "global(workDirectory=\"{work}\")\n\
             template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             ruleset(name=\"in\") {{ action(type=\"omfile\" file=\"{out}\" template=\"raw\" flushOnTXEnd=\"on\" asyncWriting=\"off\") }}\n",
            work = work.display(),
            out = out.display()
        );
        match (pki, tls_port) {
            (Some(pki), Some(tls)) => {
                conf.push_str(&format!(
                    "global(defaultNetstreamDriverCAFile=\"{ca}\" defaultNetstreamDriverCertFile=\"{cert}\" defaultNetstreamDriverKeyFile=\"{key}\")\n\
                     module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"{auth}\")\n\
                     input(type=\"imtcp\" port=\"{tls}\" address=\"127.0.0.1\" ruleset=\"in\")\n\
                     input(type=\"imtcp\" port=\"{tcp}\" address=\"127.0.0.1\" ruleset=\"in\" streamDriver.mode=\"0\")\n",
                    ca = pki.ca_cert.display(),
                    cert = pki.server_cert.display(),
                    key = pki.server_key.display(),
                    tcp = tcp_port,
                    auth = if client_auth { "x509/certvalid" } else { "anon" },
                ));
            }
            _ => {
                conf.push_str(&format!(
                    "module(load=\"imtcp\")\ninput(type=\"imtcp\" port=\"{tcp_port}\" address=\"127.0.0.1\" ruleset=\"in\")\n"
                ));
            }
        }
        let conf_path = dir.path().join("rsyslog.conf");
        std::fs::write(&conf_path, conf)?;
        let mut r = Rsyslog {
            dir,
            child: None,
            tcp_port,
            tls_port,
            conf: conf_path,
        };
        r.restart()?;
        Ok(r)
    }

    /// The file every received message is appended to, one per line.
    pub fn messages_path(&self) -> PathBuf {
        self.dir.path().join("messages.log")
    }

    /// The messages received so far.
    pub fn messages(&self) -> Vec<String> {
        std::fs::read_to_string(self.messages_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until at least `n` messages arrived.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.messages();
            if m.len() >= n {
                return Ok(m);
            }
            if Instant::now() > deadline {
                bail!(
                    "rsyslogd received {} of {n} messages within {timeout:?}; its log: {}",
                    m.len(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// rsyslogd's own output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyslogd.out")).unwrap_or_default()
    }

    /// Kills rsyslogd at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts rsyslogd again on the same ports and files.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("rsyslogd.out"))?;
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("cannot start {RSYSLOGD} (is the rsyslog package installed?)")
            })?;
        self.child = Some(child);
        let ports = [Some(self.tcp_port), self.tls_port];
        for port in ports.into_iter().flatten() {
            if let Err(e) = wait_for_port(port, Duration::from_secs(15)) {
                bail!(
                    "rsyslogd did not listen on {port}: {e}; its log: {}",
                    self.log()
                );
            }
        }
        Ok(())
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}
