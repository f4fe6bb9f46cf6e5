//! Forward authentication through real reverse proxies: Debian's nginx (`auth_request`)
//! and Caddy (`forward_auth`), configured as the README's snippets say, in front of a
//! small app that greets whoever the proxy names. The proxies run from a temporary
//! directory on a free loopback port, and are killed (by their own PID) when the test
//! ends. `scripts/services.sh` installs both; without one the test fails, and says why.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, LOCATION};

use crate::common::TestApp;
use crate::forward_auth::signed_in;

const PUBLIC_URL: &str = "https://auth.example.com";

/// A proxy process, killed when dropped.
struct Proxy {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// Starts `program args` in `dir` and waits until it accepts connections on `port`.
    fn start(program: &str, args: &[&str], dir: tempfile::TempDir, port: u16) -> Proxy {
        let path = which(program).unwrap_or_else(|| {
            panic!("`{program}` is not installed: scripts/services.sh installs it (apt-get)")
        });
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let child = Command::new(path)
            .args(args)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        let mut proxy = Proxy { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("{program} exited ({status}):\n{}", proxy.log());
            }
            assert!(
                Instant::now() < deadline,
                "{program} did not listen on {port} within 15 s:\n{}",
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        proxy
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The protected app: greets the user the proxy names in `X-Auth-User`, and echoes the
/// path it was asked for.
async fn start_app() -> SocketAddr {
    let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        let user = req
            .headers()
            .get("x-auth-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nobody")
            .to_owned();
        format!("hello {user} at {}", req.uri())
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// nginx with the README's `auth_request` snippet.
fn start_nginx(gatehouse: &str, app: SocketAddr) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let conf = format!(
        r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/proxy.log info;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen 127.0.0.1:{port};

    location = /_gatehouse {{
      internal;
      proxy_pass {gatehouse}/auth/verify;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
    }}

    location / {{
      auth_request /_gatehouse;
      auth_request_set $gatehouse_user $upstream_http_x_auth_user;
      auth_request_set $gatehouse_login $upstream_http_location;
      error_page 401 =302 $gatehouse_login;
      proxy_set_header X-Auth-User $gatehouse_user;
      proxy_pass http://{app};
    }}
  }}
}}
"#
    );
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let conf_path = conf_path.display().to_string();
    let prefix = format!("{d}/");
    Proxy::start(
        "nginx",
        &[
            "-p",
            &prefix,
            "-c",
            &conf_path,
            "-e",
            &format!("{d}/proxy.log"),
        ],
        dir,
        port,
    )
}

/// Caddy with the README's `forward_auth` snippet.
fn start_caddy(gatehouse: &str, app: SocketAddr) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let upstream = gatehouse.trim_start_matches("http://");
    let conf = format!(
        r#"{{
  admin off
  auto_https off
}}
http://127.0.0.1:{port} {{
  forward_auth {upstream} {{
    uri /auth/verify
    copy_headers X-Auth-User
  }}
  reverse_proxy {app}
}}
"#
    );
    let conf_path = dir.path().join("Caddyfile");
    std::fs::write(&conf_path, conf).unwrap();
    let conf_path = conf_path.display().to_string();
    Proxy::start(
        "caddy",
        &["run", "--config", &conf_path, "--adapter", "caddyfile"],
        dir,
        port,
    )
}

/// What a browser sees at `url` through the proxy, with the session cookie if given.
async fn browse(url: &str, token: Option<&str>, forged_user: bool) -> (u16, String, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut req = client
        .get(url)
        .header(ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8");
    if let Some(token) = token {
        req = req.header("cookie", format!("session={token}"));
    }
    if forged_user {
        req = req.header("x-auth-user", "admin");
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, location, resp.text().await.unwrap_or_default())
}

/// The same walk through either proxy: sent to the login page with the URL asked for,
/// let through with a session and named by the proxy, never by the client.
async fn walk(proxy: &Proxy, app: &TestApp) {
    let asked = proxy.url("/reports/q3?year=2026&x=a%20b");
    let want = format!(
        "{PUBLIC_URL}/ui/login?return_to={}",
        url::form_urlencoded::byte_serialize(asked.as_bytes()).collect::<String>()
    );
    let (status, location, _) = browse(&asked, None, false).await;
    assert_eq!(
        (status, location.as_str()),
        (302, want.as_str()),
        "{}",
        proxy.log()
    );
    // A header naming someone, from the client, lets nobody in.
    let (status, _, body) = browse(&asked, None, true).await;
    assert_eq!(status, 302, "{body}");

    let token = signed_in(app, "alice").await;
    let (status, _, body) = browse(&asked, Some(&token), false).await;
    assert_eq!(status, 200, "{body}\n{}", proxy.log());
    assert_eq!(body, "hello alice at /reports/q3?year=2026&x=a%20b");
    // With a session, the proxy's header wins over the client's.
    let (status, _, body) = browse(&asked, Some(&token), true).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "hello alice at /reports/q3?year=2026&x=a%20b")
    );

    // Signed out: back to the login page.
    assert_eq!(app.logout(&token).await.status(), 200);
    let (status, location, _) = browse(&asked, Some(&token), false).await;
    assert_eq!((status, location.as_str()), (302, want.as_str()));
}

#[tokio::test]
async fn nginx_auth_request_lets_a_session_through_and_sends_a_stranger_to_the_login_page() {
    let app = TestApp::spawn_with(&[("PUBLIC_URL", PUBLIC_URL)]).await;
    let upstream = start_app().await;
    let nginx = start_nginx(&app.url(""), upstream);
    walk(&nginx, &app).await;
}

#[tokio::test]
async fn caddy_forward_auth_lets_a_session_through_and_sends_a_stranger_to_the_login_page() {
    let app = TestApp::spawn_with(&[("PUBLIC_URL", PUBLIC_URL)]).await;
    let upstream = start_app().await;
    let caddy = start_caddy(&app.url(""), upstream);
    walk(&caddy, &app).await;
}
