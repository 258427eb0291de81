//! The little HTTP/1.1 client the webhook and HEC sinks need: one POST per connection
//! (`Connection: close`), a status line and headers read back, a bounded body. Plain or TLS.

use crate::net;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a request may take from connecting to the end of the response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most response bytes read (status, headers and the start of the body).
const MAX_RESPONSE: usize = 64 * 1024;

/// A parsed `http://` or `https://` address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("url '{url}' must start with http:// or https://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!(
                "url '{url}': credentials in the address are not accepted (use a header or a secret file)"
            ));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if authority.ends_with(']') || !authority.contains(':') {
            (authority.to_string(), default_port)
        } else {
            net::split_host_port(authority)
                .ok_or_else(|| format!("url '{url}' has a bad host or port"))?
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() || path.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!("url '{url}' is not a valid address"));
        }
        Ok(Url {
            tls,
            host,
            port,
            path: path.to_string(),
        })
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// What came back.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The start of the body, for error messages.
    pub body: String,
}

/// POSTs `body` to `url` with `headers`.
pub async fn post(
    url: &Url,
    tls: Option<(Arc<rustls::ClientConfig>, &str)>,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Response, String> {
    let work = async {
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: custos/{}\r\nContent-Length: {}\r\nConnection: close\r\n",
            url.path,
            url.host_header(),
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        for (k, v) in headers {
            if k.chars().any(|c| c.is_control() || c == ':') || v.chars().any(char::is_control) {
                return Err(format!("header '{k}' is not a valid HTTP header"));
            }
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if url.tls {
            let (config, name) = tls.ok_or("an https url needs TLS settings")?;
            let mut s = net::connect_tls(&url.host, url.port, name, config).await?;
            exchange(&mut s, head.as_bytes(), body).await
        } else {
            let mut s = net::connect_tcp(&url.host, url.port).await?;
            exchange(&mut s, head.as_bytes(), body).await
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no complete answer from {}:{} within {}s",
            url.host,
            url.port,
            REQUEST_TIMEOUT.as_secs()
        )),
    }
}

async fn exchange<S: net::Stream + ?Sized>(
    s: &mut S,
    head: &[u8],
    body: &[u8],
) -> Result<Response, String> {
    let io = |e: std::io::Error| format!("connection failed: {e}");
    s.write_all(head).await.map_err(io)?;
    s.write_all(body).await.map_err(io)?;
    s.flush().await.map_err(io)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    // Read until the headers are complete (and then whatever of the body fits).
    let header_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() >= MAX_RESPONSE {
            return Err("the response headers are too long".into());
        }
        let n = s.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err("the connection closed before a complete response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let (version, code) = (parts.next(), parts.next());
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(format!("not an HTTP/1 response: '{}'", clip(status_line)));
    }
    let status: u16 = code
        .and_then(|c| c.parse().ok())
        .filter(|c| (100..600).contains(c))
        .ok_or_else(|| format!("bad status line '{}'", clip(status_line)))?;
    // The body matters only for error messages: read a little of it, best effort.
    let mut rest = buf[header_end + 4..].to_vec();
    while rest.len() < 1024 {
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => rest.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    Ok(Response {
        status,
        body: clip(&String::from_utf8_lossy(&rest)),
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn clip(s: &str) -> String {
    let t: String = s.chars().take(200).collect();
    t.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = Url::parse("https://hooks.example/a/b?x=1").unwrap();
        assert_eq!(
            u,
            Url {
                tls: true,
                host: "hooks.example".into(),
                port: 443,
                path: "/a/b?x=1".into()
            }
        );
        let u = Url::parse("http://127.0.0.1:8088").unwrap();
        assert_eq!((u.port, u.path.as_str(), u.tls), (8088, "/", false));
        assert_eq!(u.host_header(), "127.0.0.1:8088");
        let u = Url::parse("http://[::1]:9/x").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert_eq!(u.host_header(), "[::1]:9");
        assert!(Url::parse("ftp://x").is_err());
        assert!(
            Url::parse("https://user:pw@x/")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(Url::parse("http://x:notaport/").is_err());
        assert!(Url::parse("http:///path").is_err());
        assert!(Url::parse("http://x/a b").is_err());
    }

    #[tokio::test]
    async fn a_post_reads_the_status_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut c, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 1024];
            while find(&got, b"hello").is_none() {
                let n = c.read(&mut b).await.unwrap();
                got.extend_from_slice(&b[..n]);
            }
            c.write_all(b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nlater")
                .await
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let url = Url::parse(&format!("http://127.0.0.1:{port}/in")).unwrap();
        let r = post(&url, None, &[("X-A".into(), "b".into())], b"hello")
            .await
            .unwrap();
        assert_eq!(r.status, 503);
        assert!(r.body.starts_with("late"));
        let req = server.await.unwrap();
        assert!(req.starts_with("POST /in HTTP/1.1\r\n"));
        assert!(req.contains("Content-Length: 5\r\n"));
        assert!(req.contains("X-A: b\r\n"));
        let bad = post(&url, None, &[("Bad\r\nX".into(), "v".into())], b"").await;
        assert!(bad.is_err());
    }
}
