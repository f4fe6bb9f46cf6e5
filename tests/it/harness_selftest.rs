//! Tests of what the black-box harness (`common`) does itself: the SMTP sink's dialogue,
//! which part of a mail `Mail::text` reads, what the Twilio mock records, the bounded
//! waits and `extract_code`. MIME decoding (mailparse) and HTTP mocking (wiremock) are the
//! crates' own business. Only `spawns_the_server` needs the real server.

use std::time::Duration;

use crate::common::{extract_code, json, SmtpSink, TestApp, TwilioMock, DELIVERY_TIMEOUT};
use lettre::message::header::ContentType;
use lettre::message::{Message, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn mailer(port: u16) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .timeout(Some(Duration::from_secs(10)))
        .build()
}

fn plain_mail(to: &str, subject: &str, body: &str) -> Message {
    Message::builder()
        .from("Gatehouse <gatehouse@test.invalid>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_string())
        .unwrap()
}

#[tokio::test]
async fn smtp_sink_receives_a_7bit_mail_from_lettre() {
    let sink = SmtpSink::start();
    let body = "Your code is 123456.\n.a line that starts with a dot\n..and two\nBye";
    mailer(sink.port())
        .send(plain_mail("Alice@Example.test", "Your code", body))
        .await
        .expect("lettre sends to the sink");

    // The recipient match is case-insensitive.
    let mails = sink
        .wait_for("alice@example.test", 1, DELIVERY_TIMEOUT)
        .await;
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.from, "gatehouse@test.invalid");
    assert_eq!(mail.to, vec!["Alice@Example.test".to_string()]);
    assert_eq!(mail.subject(), "Your code");
    assert_eq!(mail.text().trim_end(), body, "dots are unstuffed");
    assert_eq!(extract_code(&mail.text()), "123456");
    assert_eq!(sink.messages().len(), 1);
    assert!(sink.messages_to("bob@example.test").is_empty());
}

#[tokio::test]
async fn smtp_sink_reads_the_plain_part_of_a_multipart_mail() {
    let sink = SmtpSink::start();
    let mail = Message::builder()
        .from("gatehouse@test.invalid".parse().unwrap())
        .to("multi@example.test".parse().unwrap())
        .subject("Both")
        .multipart(MultiPart::alternative_plain_html(
            "Plain code 112233".to_string(),
            "<p>HTML code 445566</p>".to_string(),
        ))
        .unwrap();
    mailer(sink.port()).send(mail).await.unwrap();
    let got = sink
        .wait_for("multi@example.test", 1, DELIVERY_TIMEOUT)
        .await;
    assert_eq!(got[0].text().trim(), "Plain code 112233");
}

#[tokio::test]
async fn smtp_sink_handles_many_connections_at_once() {
    let sink = SmtpSink::start();
    let sends = (0..8).map(|i| {
        // A transport each, so each mail has its own connection.
        let mailer = mailer(sink.port());
        async move {
            let mail = plain_mail("many@example.test", "n", &format!("mail {i}"));
            mailer.send(mail).await
        }
    });
    for result in futures_join_all(sends).await {
        result.expect("send");
    }
    let mails = sink
        .wait_for("MANY@example.test", 8, DELIVERY_TIMEOUT)
        .await;
    assert_eq!(mails.len(), 8);
    sink.clear();
    assert!(sink.messages().is_empty());
}

/// Runs the futures concurrently on the test's runtime (no `futures` crate needed).
async fn futures_join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn smtp_sink_speaks_the_protocol() {
    let sink = SmtpSink::start();
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", sink.port()))
        .await
        .unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);

    assert!(reply(&mut r).await.starts_with("220 "));
    let ehlo = say(&mut w, &mut r, "EHLO client.test\r\n").await;
    assert!(ehlo.starts_with("250-") && !ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"));
    let script = [
        ("RCPT TO:<x@example.test>\r\n", "503"),
        ("VRFY someone\r\n", "502"),
        ("NOOP\r\n", "250"),
        ("MAIL FROM:<a@example.test> SIZE=100\r\n", "250"),
        ("RSET\r\n", "250"),
        ("DATA\r\n", "503"),
        ("mail from:<a@example.test>\r\n", "250"),
        ("rcpt to:<raw@example.test>\r\n", "250"),
        ("RCPT TO:<cc@example.test>\r\n", "250"),
        ("DATA\r\n", "354"),
        (
            "Subject: raw\r\n\r\ncode=3D 987654=\r\n!\r\n..dot\r\n.\r\n",
            "250",
        ),
        ("QUIT\r\n", "221"),
    ];
    for (command, code) in script {
        let answer = say(&mut w, &mut r, command).await;
        assert!(answer.starts_with(code), "{command:?} got {answer:?}");
    }

    let mails = sink.wait_for("cc@example.test", 1, DELIVERY_TIMEOUT).await;
    let mail = &mails[0];
    assert_eq!(mail.from, "a@example.test");
    assert_eq!(mail.to, vec!["raw@example.test", "cc@example.test"]);
    assert_eq!(
        mail.data,
        "Subject: raw\r\n\r\ncode=3D 987654=\r\n!\r\n.dot\r\n"
    );
    // No Content-Transfer-Encoding header: 7bit, so the text is left as it is.
    assert_eq!(mail.text(), "code=3D 987654=\n!\n.dot\n");
}

type ReadHalf = BufReader<tokio::net::tcp::OwnedReadHalf>;

/// One SMTP reply, all its lines.
async fn reply(r: &mut ReadHalf) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line))
            .await
            .expect("reply within 5 s")
            .unwrap();
        assert!(n > 0, "connection closed early");
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}

async fn say(w: &mut tokio::net::tcp::OwnedWriteHalf, r: &mut ReadHalf, text: &str) -> String {
    w.write_all(text.as_bytes()).await.unwrap();
    reply(r).await
}

#[tokio::test]
async fn twilio_mock_records_form_posts() {
    let twilio = TwilioMock::start().await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!(
        "{}/2010-04-01/Accounts/ACtest/Messages.json",
        twilio.base_url()
    );

    let resp = client
        .post(&url)
        .basic_auth("ACtest", Some("test-token"))
        .form(&[
            ("To", "+15551234567"),
            ("From", "+15550000000"),
            ("Body", "Your Gatehouse code is 864209 & more"),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = json(resp).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["sid"].as_str().unwrap().starts_with("SM"), "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["to"], "+15551234567");

    let resp = client
        .post(&url)
        .basic_auth("ACtest", Some("wrong"))
        .form(&[
            ("To", "+15557654321"),
            ("From", "+15550000000"),
            ("Body", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    let got = twilio.wait_for("+15551234567", 1, DELIVERY_TIMEOUT).await;
    assert_eq!(got.len(), 1);
    let sms = &got[0];
    assert_eq!(sms.sid, "ACtest");
    assert!(sms.auth_ok);
    assert_eq!(sms.from, "+15550000000");
    assert_eq!(sms.body, "Your Gatehouse code is 864209 & more");
    assert_eq!(extract_code(&sms.body), "864209");

    let other = twilio.wait_for("+15557654321", 1, DELIVERY_TIMEOUT).await;
    assert!(!other[0].auth_ok);
    assert_eq!(twilio.messages().len(), 2);
}

#[tokio::test]
#[should_panic(expected = "expected 1 message(s) to +15550001111")]
async fn twilio_wait_for_gives_up_after_its_timeout() {
    let twilio = TwilioMock::start().await;
    twilio
        .wait_for("+15550001111", 1, Duration::from_millis(200))
        .await;
}

#[test]
fn extract_code_finds_six_digits_bounded_by_non_digits() {
    assert_eq!(extract_code("Your code is 123456."), "123456");
    assert_eq!(extract_code("123456"), "123456");
    assert_eq!(extract_code("abc000111def"), "000111");
    assert_eq!(
        extract_code("call +15550000000 or 12345, code 654321"),
        "654321"
    );
    assert_eq!(
        extract_code("1234567 then 98765 then 246813 and 111111"),
        "246813"
    );
}

#[test]
#[should_panic(expected = "no 6-digit code")]
fn extract_code_panics_without_a_code() {
    extract_code("12345 1234567");
}

#[tokio::test]
async fn spawns_the_server() {
    let app = TestApp::spawn().await;
    let resp = app.get("/healthz", None).await;
    assert_eq!(resp.status().as_u16(), 200, "logs:\n{}", app.logs());
    assert!(app.db_url().starts_with("sqlite://"));
    assert!(app.logs().contains("listening on http://"));
}
