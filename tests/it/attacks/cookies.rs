//! Attacks on the cookies: one tossed in by a sibling subdomain (or over plain HTTP)
//! winning over ours.

use crate::common::{extract_code, json, set_cookie_header, TestApp, DELIVERY_TIMEOUT};

const PASSWORD: &str = "correct horse battery";

/// The value of the cookie `name` in the response's Set-Cookie headers.
fn cookie_value(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
}

async fn me_with_cookie(app: &TestApp, cookies: &[&str]) -> u16 {
    let mut req = app.request(reqwest::Method::GET, "/me");
    for c in cookies {
        req = req.header("cookie", *c);
    }
    app.send(req, "GET /me").await.status().as_u16()
}

#[tokio::test]
async fn secure_cookies_carry_host_and_secure_prefixes_and_a_tossed_cookie_does_not_win() {
    let app = TestApp::spawn_with(&[("COOKIE_SECURE", "true")]).await;
    assert_eq!(
        app.register("alice", "alice@example.com", None, PASSWORD)
            .await
            .status(),
        201
    );
    let resp = app.login("alice", PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let header = set_cookie_header(&resp, "__Host-session").expect("a __Host-session cookie");
    assert!(
        header.contains("Path=/;") && header.contains("Secure"),
        "{header}"
    );
    assert!(!header.to_ascii_lowercase().contains("domain="), "{header}");
    let token = cookie_value(&resp, "__Host-session").unwrap();

    assert_eq!(
        me_with_cookie(&app, &[&format!("__Host-session={token}")]).await,
        200
    );
    // An unprefixed cookie is what a sibling subdomain or a plain-HTTP page could set.
    assert_eq!(
        me_with_cookie(&app, &[&format!("session={token}")]).await,
        401
    );
    // Two values for our name: ambiguous, whichever comes first.
    let tossed = "A".repeat(43);
    for pair in [
        [
            format!("__Host-session={tossed}"),
            format!("__Host-session={token}"),
        ],
        [
            format!("__Host-session={token}"),
            format!("__Host-session={tossed}"),
        ],
    ] {
        assert_eq!(me_with_cookie(&app, &[&pair[0], &pair[1]]).await, 401);
        assert_eq!(me_with_cookie(&app, &[&pair.join("; ")]).await, 401);
    }

    assert_eq!(app.forgot("alice").await.status(), 200);
    let mail = app
        .smtp
        .wait_for("alice@example.com", 1, DELIVERY_TIMEOUT)
        .await;
    let resp = app.validate("alice", &extract_code(&mail[0].text())).await;
    let header = set_cookie_header(&resp, "__Secure-reset_token").expect("a reset cookie");
    assert!(header.contains("Path=/reset-password"), "{header}");
    let (status, _) = json(resp).await;
    assert_eq!(status, 200);
}
