//! The mail provider the server under test talks to: a small SMTP sink on 127.0.0.1 that
//! accepts every message and keeps it in memory, and `Mail`, one message as received,
//! read through `mailparse`.
//!
//! Why a sink of our own: the SMTP mock crates on crates.io are either abandoned
//! one-release projects or whole mail-testing products (web UI, storage, TLS); what the
//! server needs is an SMTP dialogue without TLS or AUTH, which is the hundred lines below.
//! Decoding MIME is not ours: `mailparse` does it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::{bind_loopback, lock, mock_runtime, poll_until, TaskGuard};

/// One message the SMTP sink accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The MAIL FROM address, without angle brackets.
    pub from: String,
    /// The RCPT TO addresses, without angle brackets, in order.
    pub to: Vec<String>,
    /// The raw message (headers and body) as sent after DATA, dot-unstuffed, CRLF kept.
    pub data: String,
}

impl Mail {
    /// True if `addr` is one of the envelope recipients (ASCII case-insensitive).
    pub fn is_to(&self, addr: &str) -> bool {
        self.to.iter().any(|t| t.eq_ignore_ascii_case(addr))
    }

    fn parsed(&self) -> mailparse::ParsedMail<'_> {
        mailparse::parse_mail(self.data.as_bytes()).unwrap_or_else(|e| {
            panic!(
                "the server sent a mail mailparse cannot read ({e}):\n{}",
                self.data
            )
        })
    }

    /// The first header called `name` (case-insensitive), unfolded and decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        use mailparse::MailHeaderMap;
        self.parsed().headers.get_first_value(name)
    }

    /// The decoded Subject header, or "" if there is none.
    /// A verification code, as every registration sends.
    pub fn is_verification(&self) -> bool {
        self.subject().starts_with("Verify your")
    }

    pub fn subject(&self) -> String {
        self.header("Subject").unwrap_or_default()
    }

    /// The readable text of the message: its text/plain parts (or any text/* part when
    /// there is no text/plain) with the transfer encoding and charset undone, CRLF turned
    /// into LF.
    pub fn text(&self) -> String {
        let parsed = self.parsed();
        let mut leaves = Vec::new();
        collect_leaves(&parsed, &mut leaves);
        let plain: Vec<_> = leaves
            .iter()
            .filter(|p| p.ctype.mimetype.eq_ignore_ascii_case("text/plain"))
            .collect();
        let chosen: Vec<_> = if plain.is_empty() {
            leaves
                .iter()
                .filter(|p| p.ctype.mimetype.to_ascii_lowercase().starts_with("text/"))
                .collect()
        } else {
            plain
        };
        chosen
            .into_iter()
            .map(|part| {
                part.get_body()
                    .unwrap_or_else(|e| panic!("undecodable part ({e}):\n{}", self.data))
            })
            .collect::<Vec<_>>()
            .join("\n")
            .replace("\r\n", "\n")
    }
}

/// The parts of a message that are not themselves multipart, in order.
fn collect_leaves<'a>(
    part: &'a mailparse::ParsedMail<'a>,
    out: &mut Vec<&'a mailparse::ParsedMail<'a>>,
) {
    if part.subparts.is_empty() {
        out.push(part);
    }
    for sub in &part.subparts {
        collect_leaves(sub, out);
    }
}

/// A real SMTP server on 127.0.0.1 that accepts everything and keeps it in memory.
/// Cheap to clone; the listener closes when the last clone is dropped.
#[derive(Clone)]
pub struct SmtpSink {
    port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    _task: Arc<TaskGuard>,
}

impl SmtpSink {
    /// Binds 127.0.0.1:0 and starts accepting connections in the background.
    pub fn start() -> SmtpSink {
        SmtpSink::from_listener(bind_loopback(0))
    }

    /// A sink on a given port (to bring a "mail provider" back where it used to be).
    pub fn start_on(port: u16) -> SmtpSink {
        SmtpSink::from_listener(bind_loopback(port))
    }

    fn from_listener(listener: std::net::TcpListener) -> SmtpSink {
        let port = listener.local_addr().expect("local addr").port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let task_mails = mails.clone();
        let handle = mock_runtime().spawn(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener).expect("register SMTP listener");
            // Connections live in this set, so aborting the accept loop ends them too.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            let mails = task_mails.clone();
                            // An error only means the client went away.
                            conns.spawn(async move { let _ = session(stream, mails).await; });
                        }
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        SmtpSink {
            port,
            mails,
            _task: Arc::new(TaskGuard(handle.abort_handle())),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:PORT`, the value for SMTP_URL.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every mail received so far, in arrival order, but the verification codes every
    /// registration sends (see `all_messages`): the suites written before those existed
    /// read "the mails to alice" as the ones their own steps caused.
    pub fn messages(&self) -> Vec<Mail> {
        self.all_messages()
            .into_iter()
            .filter(|m| !m.is_verification())
            .collect()
    }

    /// Every mail received so far, verification codes included.
    pub fn all_messages(&self) -> Vec<Mail> {
        lock(&self.mails).clone()
    }

    /// The mails received so far with `to` among their recipients (case-insensitive),
    /// verification codes aside (see `messages`).
    pub fn messages_to(&self, to: &str) -> Vec<Mail> {
        self.all_messages_to(to)
            .into_iter()
            .filter(|m| !m.is_verification())
            .collect()
    }

    /// The mails received so far to `to`, verification codes included.
    pub fn all_messages_to(&self, to: &str) -> Vec<Mail> {
        lock(&self.mails)
            .iter()
            .filter(|m| m.is_to(to))
            .cloned()
            .collect()
    }

    /// Waits until a mail to `to` whose subject contains `subject` has arrived (counting
    /// verification codes too) and returns the newest such; panics after `timeout`.
    pub async fn wait_for_subject(&self, to: &str, subject: &str, timeout: Duration) -> Mail {
        let found = poll_until(timeout, || {
            self.all_messages_to(to)
                .into_iter()
                .rev()
                .find(|m| m.subject().contains(subject))
        })
        .await;
        found.unwrap_or_else(|| {
            let got: Vec<_> = self
                .all_messages()
                .into_iter()
                .map(|m| (m.to.clone(), m.subject()))
                .collect();
            panic!("SMTP sink: no mail to {to} about {subject:?} within {timeout:?}; got {got:?}")
        })
    }

    /// Forgets every mail received so far.
    pub fn clear(&self) {
        lock(&self.mails).clear();
    }

    /// Waits until at least `n` mails to `to` (case-insensitive) have arrived and returns
    /// all of them; panics, listing what did arrive, after `timeout`.
    pub async fn wait_for(&self, to: &str, n: usize, timeout: Duration) -> Vec<Mail> {
        let found = poll_until(timeout, || {
            let mails = self.messages_to(to);
            (mails.len() >= n).then_some(mails)
        })
        .await;
        found.unwrap_or_else(|| {
            let got: Vec<_> = self.messages().into_iter().map(|m| m.to).collect();
            panic!(
                "SMTP sink: expected {n} mail(s) to {to} within {timeout:?}, got {}; \
                 recipients of everything received: {got:?}",
                self.messages_to(to).len()
            )
        })
    }
}

/// The address inside `<…>` of a MAIL FROM / RCPT TO argument (parameters ignored).
fn path_of(arg: &str) -> String {
    let arg = arg.trim();
    match (arg.find('<'), arg.find('>')) {
        (Some(start), Some(end)) if start < end => arg[start + 1..end].to_string(),
        _ => arg.split_whitespace().next().unwrap_or("").to_string(),
    }
}

/// `arg` without its `prefix` (`FROM:`, `TO:`), compared case-insensitively.
fn strip_keyword<'a>(arg: &'a str, prefix: &str) -> Option<&'a str> {
    let arg = arg.trim();
    let head = arg.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &arg[prefix.len()..])
}

/// Reads one line into `line`; 0 at end of file. A connection the server leaves open (its
/// pool) must not hold a test forever, hence the idle limit.
async fn read_line(
    r: &mut (impl AsyncBufReadExt + Unpin),
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    const IDLE: Duration = Duration::from_secs(300);
    line.clear();
    tokio::time::timeout(IDLE, r.read_until(b'\n', line))
        .await
        .map_err(|_| std::io::Error::other("idle client"))?
}

/// One SMTP dialogue (RFC 5321 without extensions): enough for lettre, and strict about
/// order (MAIL before RCPT before DATA) so a client bug is not hidden.
async fn session(stream: TcpStream, mails: Arc<Mutex<Vec<Mail>>>) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 gatehouse-test-sink ESMTP ready\r\n")
        .await?;

    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        if read_line(&mut r, &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
        let reply: &[u8] = match verb.to_ascii_uppercase().as_str() {
            "EHLO" | "HELO" | "RSET" => {
                from = None;
                rcpts.clear();
                if verb.eq_ignore_ascii_case("EHLO") {
                    b"250-gatehouse-test-sink greets you\r\n250 HELP\r\n"
                } else {
                    b"250 OK\r\n"
                }
            }
            "MAIL" => match strip_keyword(arg, "FROM:") {
                Some(path) => {
                    from = Some(path_of(path));
                    rcpts.clear();
                    b"250 OK\r\n"
                }
                None => b"501 syntax: MAIL FROM:<address>\r\n",
            },
            "RCPT" => match strip_keyword(arg, "TO:") {
                _ if from.is_none() => b"503 MAIL first\r\n",
                Some(path) => {
                    rcpts.push(path_of(path));
                    b"250 OK\r\n"
                }
                None => b"501 syntax: RCPT TO:<address>\r\n",
            },
            "DATA" if from.is_none() || rcpts.is_empty() => b"503 MAIL and RCPT first\r\n",
            "DATA" => {
                w.write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = Vec::new();
                loop {
                    if read_line(&mut r, &mut line).await? == 0 {
                        return Ok(()); // The client left mid-message: nothing is stored.
                    }
                    if line == b".\r\n" || line == b".\n" {
                        break;
                    }
                    // Dot-stuffing (RFC 5321 4.5.2): a leading dot was doubled.
                    data.extend_from_slice(line.strip_prefix(b".").unwrap_or(&line));
                }
                lock(&mails).push(Mail {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut rcpts),
                    data: String::from_utf8_lossy(&data).into_owned(),
                });
                b"250 OK queued\r\n"
            }
            "NOOP" => b"250 OK\r\n",
            "QUIT" => {
                w.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 command not implemented\r\n",
        };
        w.write_all(reply).await?;
    }
}
