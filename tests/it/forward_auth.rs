//! Black-box tests of forward authentication (`GET /auth/verify`): what a reverse proxy is
//! told about a browser with a live session, without one, and with one short of what the
//! protected location requires. Real nginx and Caddy in front of a small app are
//! `proxies`.

use reqwest::header::{ACCEPT, CACHE_CONTROL, LOCATION};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::authenticator;
use crate::common::{authed_json, extract_code, json, session_cookie, TestApp, DELIVERY_TIMEOUT};

const PASSWORD: &str = "correct horse battery";
const NOT_LOGGED_IN: &str = "Not logged in, or the session has expired";

/// Registers `name` and logs in; the session token.
pub(crate) async fn signed_in(app: &TestApp, name: &str) -> String {
    let email = format!("{name}@example.com");
    let (status, body) = json(app.register(name, &email, None, PASSWORD).await).await;
    assert_eq!(status, 201, "{body}");
    let resp = app.login(name, PASSWORD).await;
    assert_eq!(resp.status(), 200);
    session_cookie(&resp).expect("a session cookie")
}

/// GET /auth/verify`query` with the session cookie (if any) and extra headers.
async fn verify(
    app: &TestApp,
    query: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = app.request(Method::GET, &format!("/auth/verify{query}"));
    if let Some(token) = token {
        req = req.header("cookie", format!("session={token}"));
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    app.send(req, "GET /auth/verify").await
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

#[tokio::test]
async fn a_live_session_passes_with_headers_naming_the_user() {
    let app = TestApp::spawn().await;
    let token = signed_in(&app, "alice").await;
    let me = crate::common::me(&app, &token).await;

    let resp = verify(&app, "", Some(&token), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-auth-user").as_deref(), Some("alice"));
    assert_eq!(
        header(&resp, "x-auth-email").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        header(&resp, "x-auth-user-id"),
        Some(me["id"].to_string()),
        "{me}"
    );
    assert_eq!(header(&resp, "remote-user").as_deref(), Some("alice"));
    assert_eq!(
        header(&resp, "remote-email").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        header(&resp, CACHE_CONTROL.as_str()).as_deref(),
        Some("no-store")
    );
    assert!(resp.bytes().await.unwrap().is_empty());

    // A bearer token is a session too; HEAD is answered like GET.
    let resp = app.get("/auth/verify", Some(&token)).await;
    assert_eq!(resp.status(), 200);
    let head = app
        .request(Method::HEAD, "/auth/verify")
        .bearer_auth(&token);
    assert_eq!(app.send(head, "HEAD /auth/verify").await.status(), 200);

    // Once logged out, the same cookie passes no more.
    assert_eq!(app.logout(&token).await.status(), 200);
    let resp = verify(&app, "", Some(&token), &[]).await;
    assert_eq!(resp.status(), 401);
    assert!(header(&resp, "x-auth-user").is_none());
}

#[tokio::test]
async fn no_session_is_a_401_with_the_login_page_as_location_for_nginx() {
    let app = TestApp::spawn_with(&[("PUBLIC_URL", "https://auth.example.com")]).await;

    // nginx passes the original URL in a header of the operator's choosing.
    let resp = verify(
        &app,
        "",
        None,
        &[
            ("x-original-url", "https://app.example.com/docs?page=2"),
            (ACCEPT.as_str(), "text/html"),
        ],
    )
    .await;
    assert_eq!(
        resp.status(),
        401,
        "nginx cannot pass a 302 through auth_request"
    );
    assert_eq!(
        header(&resp, LOCATION.as_str()).as_deref(),
        Some(
            "https://auth.example.com/ui/login?return_to=https%3A%2F%2Fapp.example.com%2Fdocs%3Fpage%3D2"
        )
    );
    assert_eq!(
        header(&resp, CACHE_CONTROL.as_str()).as_deref(),
        Some("no-store")
    );
    let (_, body) = json(resp).await;
    assert_eq!(body["error"], json!(NOT_LOGGED_IN), "{body}");

    // A token that is no session, and no original URL: the login page alone.
    let resp = verify(&app, "", Some("not-a-session"), &[]).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        header(&resp, LOCATION.as_str()).as_deref(),
        Some("https://auth.example.com/ui/login")
    );
}

#[tokio::test]
async fn no_session_is_a_302_to_the_login_page_when_redirects_are_asked_for() {
    let app = TestApp::spawn_with(&[("PUBLIC_URL", "https://auth.example.com/")]).await;
    let caddy = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example.com"),
        ("x-forwarded-uri", "/reports/q3?x=1&y=2"),
        ("x-forwarded-method", "GET"),
    ];
    let back = "https://auth.example.com/ui/login?return_to=https%3A%2F%2Fapp.example.com%2Freports%2Fq3%3Fx%3D1%26y%3D2";

    // Asked for in the query.
    let resp = verify(&app, "?redirect=1", None, &caddy).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(header(&resp, LOCATION.as_str()).as_deref(), Some(back));

    // A browser's page navigation, forwarded by Caddy or Traefik.
    let mut browser = caddy.to_vec();
    browser.push((ACCEPT.as_str(), "text/html,application/xhtml+xml,*/*;q=0.8"));
    let resp = verify(&app, "", None, &browser).await;
    assert_eq!(resp.status(), 302);
    assert_eq!(header(&resp, LOCATION.as_str()).as_deref(), Some(back));

    // A script's request from the same page is told 401, not sent to a page.
    let mut script = caddy.to_vec();
    script.push((ACCEPT.as_str(), "application/json"));
    assert_eq!(verify(&app, "", None, &script).await.status(), 401);

    // Forwarded headers that would move the redirect elsewhere are dropped, not followed.
    for (name, value) in [
        ("x-forwarded-host", "evil.example/path"),
        ("x-forwarded-uri", "//evil.example/"),
        ("x-forwarded-proto", "javascript"),
    ] {
        let mut bent = caddy.to_vec();
        bent.retain(|(n, _)| *n != name);
        bent.push((name, value));
        let resp = verify(&app, "?redirect=1", None, &bent).await;
        assert_eq!(resp.status(), 302);
        assert_eq!(
            header(&resp, LOCATION.as_str()).as_deref(),
            Some("https://auth.example.com/ui/login"),
            "{name}: {value}"
        );
    }
}

#[tokio::test]
async fn a_session_short_of_the_locations_requirements_is_refused_with_403() {
    let app = TestApp::spawn().await;
    let token = signed_in(&app, "alice").await;

    // aal=2 on a password session.
    let resp = verify(&app, "?aal=2", Some(&token), &[]).await;
    assert_eq!(resp.status(), 403);
    assert!(header(&resp, "x-auth-user").is_none());
    let (_, body) = json(resp).await;
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(
        verify(&app, "?aal=1", Some(&token), &[]).await.status(),
        200
    );

    // verified=1 before and after the email is proven.
    let resp = verify(&app, "?verified=1", Some(&token), &[]).await;
    assert_eq!(resp.status(), 403);
    let (_, body) = json(resp).await;
    assert_eq!(body["error"], json!("Email address not verified"), "{body}");
    let mail = app
        .smtp
        .wait_for_subject(
            "alice@example.com",
            "Verify your email address",
            DELIVERY_TIMEOUT,
        )
        .await;
    let code = extract_code(&mail.data);
    let resp = app
        .post_json("/verify", &json!({"identifier": "alice", "otp": code}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        verify(&app, "?verified=1", Some(&token), &[])
            .await
            .status(),
        200
    );

    // A passkey sign-in that verified its user is aal2.
    let (status, options) =
        authed_json(&app, Method::POST, "/passkeys/register/start", &token, None).await;
    assert_eq!(status, 200, "{options}");
    let (credential, passkey) = authenticator::create(&options);
    let (status, body) = authed_json(
        &app,
        Method::POST,
        "/passkeys/register/finish",
        &token,
        Some(json!({"credential": credential})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, options) = json(app.post_json("/passkeys/login/start", &json!({})).await).await;
    let resp = app
        .post_json(
            "/passkeys/login/finish",
            &json!({"credential": authenticator::get(&options, &passkey)}),
        )
        .await;
    let strong = session_cookie(&resp).expect("a session cookie");
    let resp = verify(&app, "?aal=2&verified=1", Some(&strong), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "remote-user").as_deref(), Some("alice"));

    // A requirement the server does not understand is the proxy's mistake, named.
    for (query, field) in [
        ("?aal=3", "aal"),
        ("?verified=maybe", "verified"),
        ("?redirect=x", "redirect"),
    ] {
        let (status, body): (u16, Value) =
            json(verify(&app, query, Some(&strong), &[]).await).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.starts_with(field)),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn cookie_domain_makes_one_login_cover_the_hosts_under_it() {
    let app = TestApp::spawn_with(&[
        ("PUBLIC_URL", "http://auth.example.test:8080"),
        ("COOKIE_DOMAIN", ".Example.test"),
    ])
    .await;
    let (status, body) = json(
        app.register("alice", "alice@example.com", None, PASSWORD)
            .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let resp = app.login("alice", PASSWORD).await;
    let set = crate::common::set_cookie_header(&resp, "session").expect("a session cookie");
    assert!(set.contains("; Domain=example.test;"), "{set}");
    let token = session_cookie(&resp).unwrap();
    let resp = verify(&app, "", Some(&token), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "remote-user").as_deref(), Some("alice"));

    // Logging out clears the cookie of the same domain.
    let resp = app.logout(&token).await;
    let cleared = crate::common::set_cookie_header(&resp, "session").expect("a cleared cookie");
    assert!(
        cleared.contains("; Domain=example.test;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[tokio::test]
async fn a_cookie_domain_the_public_url_is_not_under_stops_the_server_at_start() {
    let refused = TestApp::try_spawn(
        &[
            ("PUBLIC_URL", "https://auth.example.com"),
            ("COOKIE_DOMAIN", "example.org"),
        ],
        &[],
    )
    .await;
    let err = refused.err().expect("the server must refuse to start");
    assert!(err.contains("COOKIE_DOMAIN"), "{err}");
    let refused = TestApp::try_spawn(&[("PUBLIC_URL", "ftp://auth.example.com")], &[]).await;
    let err = refused.err().expect("the server must refuse to start");
    assert!(err.contains("PUBLIC_URL"), "{err}");
}
