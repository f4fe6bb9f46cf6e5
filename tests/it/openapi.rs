//! The OpenAPI document served at `GET /openapi.json`: OpenAPI 3.1, and exactly the
//! routes the router serves, with their methods — checked both ways against the running
//! binary, so a route added without documentation (or documented without a route)
//! fails here. Schemathesis (`scripts/schemathesis.sh`) checks the responses themselves.

use std::collections::BTreeSet;

use crate::common::{json, TestApp};
use reqwest::Method;
use serde_json::Value;

/// Every route the server serves, by method and path.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/register"),
    ("POST", "/login"),
    ("POST", "/logout"),
    ("GET", "/me"),
    ("POST", "/forgot-password"),
    ("POST", "/validate-otp"),
    ("POST", "/reset-password"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("POST", "/send-verification"),
    ("POST", "/verify"),
    ("POST", "/change-password"),
    ("POST", "/change-email"),
    ("POST", "/confirm-email-change"),
    ("POST", "/change-phone"),
    ("POST", "/confirm-phone-change"),
    ("DELETE", "/me"),
    ("GET", "/sessions"),
    ("DELETE", "/sessions"),
    ("DELETE", "/sessions/{id}"),
    ("POST", "/login/mfa"),
    ("POST", "/login/mfa/passkey/start"),
    ("POST", "/login/code/request"),
    ("POST", "/login/code"),
    ("POST", "/mfa/totp/setup"),
    ("POST", "/mfa/totp/confirm"),
    ("DELETE", "/mfa/totp"),
    ("POST", "/mfa/recovery-codes"),
    ("POST", "/reauthenticate"),
    ("POST", "/reauthenticate/passkey/start"),
    ("POST", "/passkeys/register/start"),
    ("POST", "/passkeys/register/finish"),
    ("GET", "/passkeys"),
    ("DELETE", "/passkeys/{id}"),
    ("POST", "/passkeys/login/start"),
    ("POST", "/passkeys/login/finish"),
    ("GET", "/auth/verify"),
];

/// Second-factor routes that read a JSON body.
const FACTORS_WITH_BODY: &[&str] = &[
    "/login/mfa",
    "/login/code/request",
    "/login/code",
    "/mfa/totp/confirm",
    "/mfa/totp",
    "/reauthenticate",
    "/passkeys/register/finish",
    "/passkeys/login/finish",
];

/// The self-service routes that read a JSON body (POST; `DELETE /me` reads one too, but
/// shares its path with `GET /me`).
const SELF_SERVICE_WITH_BODY: &[&str] = &[
    "/send-verification",
    "/verify",
    "/change-password",
    "/change-email",
    "/confirm-email-change",
    "/change-phone",
    "/confirm-phone-change",
];

/// Routes that read a JSON body.
const WITH_BODY: &[&str] = &[
    "/register",
    "/login",
    "/forgot-password",
    "/validate-otp",
    "/reset-password",
];

/// Routes that call a rate limit.
const RATE_LIMITED: &[&str] = &[
    "/send-verification",
    "/verify",
    "/change-password",
    "/change-email",
    "/confirm-email-change",
    "/change-phone",
    "/confirm-phone-change",
    "/sessions",
    "/sessions/{id}",
    "/register",
    "/login",
    "/forgot-password",
    "/validate-otp",
    "/reset-password",
];

/// Success responses that set or clear a cookie.
const SETS_COOKIE: &[&str] = &[
    "/login",
    "/login/mfa",
    "/login/code",
    "/passkeys/login/finish",
    "/logout",
    "/validate-otp",
    "/reset-password",
    "/change-password",
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(app: &TestApp) -> Value {
    let resp = app.get("/openapi.json", None).await;
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (status, doc) = json(resp).await;
    assert_eq!(status, 200, "{doc}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert!(doc.is_object(), "not a JSON object: {doc}");
    doc
}

/// (METHOD, path) of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("a path item");
            METHODS
                .iter()
                .filter(|m| item.contains_key(**m))
                .map(move |m| (m.to_ascii_uppercase(), path.clone()))
        })
        .collect()
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let op = &doc["paths"][path][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{method} {path} is not documented");
    op
}

/// Follows `{"$ref": "#/components/…"}` in the document.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local $ref");
            let target = doc.pointer(pointer);
            assert!(target.is_some(), "dangling $ref {reference}");
            target.unwrap()
        }
        None => value,
    }
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_exactly_the_served_routes() {
    // Sign-in by code is documented always; its routes answer 404 only while it is off.
    let app = TestApp::spawn_with(&[("CODE_LOGIN", "true")]).await;
    let doc = document(&app).await;

    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "openapi is {version:?}");
    assert!(doc["info"]["title"].is_string());

    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(operations(&doc), expected, "documented operations");

    // Every listed route is served with its method: never 404 or 405.
    for (method, path) in ROUTES {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = app.request(method.clone(), path);
        if method == Method::POST {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body("{}");
        }
        let resp = app.send(req, &format!("{method} {path}")).await;
        let status = resp.status().as_u16();
        assert!(
            status != 404 && status != 405,
            "{method} {path} answered {status}: the document lists a route the server does not serve"
        );
    }

    // And no other method is served on a documented path: the router has no route the
    // document leaves out.
    for path in expected.iter().map(|(_, p)| p).collect::<BTreeSet<_>>() {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if expected.contains(&(method.to_owned(), path.clone())) {
                continue;
            }
            let req = app.request(Method::from_bytes(method.as_bytes()).unwrap(), path);
            let (status, body) = json(app.send(req, &format!("{method} {path}")).await).await;
            assert_eq!(status, 405, "{method} {path}: {body}");
        }
    }
}

#[tokio::test]
async fn every_response_error_header_and_security_scheme_is_documented() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;

    let error_body = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error_body["required"], serde_json::json!(["error", "code"]));
    assert_eq!(error_body["properties"]["error"]["type"], "string");
    assert_eq!(error_body["properties"]["code"]["type"], "string");
    // `field` comes only with `invalid_field`: optional.
    assert!(
        error_body["properties"]["field"].is_object(),
        "{error_body}"
    );

    for (method, path) in ROUTES {
        let op = operation(&doc, method, path);
        assert!(
            op["operationId"].is_string(),
            "{method} {path}: operationId"
        );
        let responses = op["responses"].as_object().expect("responses");
        let documented: BTreeSet<&str> = responses.keys().map(String::as_str).collect();
        assert!(
            documented.iter().any(|s| s.starts_with('2')),
            "{method} {path}: no success response"
        );
        assert!(
            !documented.contains("500"),
            "{method} {path}: 500 is never an expected answer"
        );

        for (status, response) in responses {
            let response = resolve(&doc, response);
            let headers = &response["headers"];
            assert_eq!(
                headers["X-Request-Id"]["required"], true,
                "{method} {path} {status}: X-Request-Id"
            );
            // /readyz's 503 is its own report, not an outage of this request.
            if (status == "429" || status == "503") && *path != "/readyz" {
                assert_eq!(
                    headers["Retry-After"]["required"], true,
                    "{method} {path} {status}: Retry-After"
                );
            }
            // Every error but /readyz's own 503 is the one error body, or one that extends
            // it: the 401 asking for a second factor, the 403 asking for a fresh proof.
            if status.starts_with('4') || (status.starts_with('5') && *path != "/readyz") {
                let schema = &response["content"]["application/json"]["schema"];
                let expected = match (*path, status.as_str()) {
                    ("/login" | "/login/code", "401") => "#/components/schemas/MfaRequired",
                    (_, "403") if schema["$ref"] != "#/components/schemas/ErrorBody" => {
                        "#/components/schemas/ReauthBody"
                    }
                    _ => "#/components/schemas/ErrorBody",
                };
                assert_eq!(
                    schema["$ref"], expected,
                    "{method} {path} {status}: error body"
                );
                let extended = resolve(&doc, schema);
                for key in ["error", "code"] {
                    assert_eq!(
                        extended["properties"][key]["type"], "string",
                        "{method} {path} {status}: `{key}` is in every error body"
                    );
                    let required = extended["required"].as_array().expect("required fields");
                    assert!(
                        required.contains(&key.into()),
                        "{method} {path} {status}: `{key}` is required"
                    );
                }
            }
            // Every schema reference resolves.
            for media in response["content"].as_object().into_iter().flatten() {
                resolve(&doc, &media.1["schema"]);
            }
        }

        if WITH_BODY.contains(path)
            || SELF_SERVICE_WITH_BODY.contains(path)
            || FACTORS_WITH_BODY.contains(path)
        {
            let body = resolve(&doc, &op["requestBody"]);
            assert_eq!(body["required"], true, "{path}: request body required");
            let schema = resolve(&doc, &body["content"]["application/json"]["schema"]);
            assert_eq!(schema["type"], "object", "{path}: request schema");
            for status in ["400", "413", "415", "422", "503"] {
                assert!(documented.contains(status), "{path}: {status}");
            }
        }
        if RATE_LIMITED.contains(path) || op["tags"][0] == "second factors" {
            assert!(documented.contains("429"), "{path}: 429");
        }
        if SETS_COOKIE.contains(path) {
            let ok = documented
                .iter()
                .find(|s| s.starts_with('2'))
                .map(|s| &responses[*s])
                .unwrap();
            assert_eq!(
                ok["headers"]["Set-Cookie"]["required"], true,
                "{path}: Set-Cookie"
            );
        }
    }

    // /me and /logout take the session as a bearer token or as the `session` cookie.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["session_cookie"]["type"], "apiKey");
    assert_eq!(schemes["session_cookie"]["in"], "cookie");
    assert_eq!(schemes["session_cookie"]["name"], "session");
    for (method, path) in [("GET", "/me"), ("POST", "/logout")] {
        let op = operation(&doc, method, path);
        assert_eq!(
            op["security"],
            serde_json::json!([{"bearer": []}, {"session_cookie": []}]),
            "{path}"
        );
        assert!(op["responses"]["401"].is_object(), "{path}: 401");
    }

    // Optional fields are optional, and the channel is one of the two.
    let register = resolve(&doc, &doc["components"]["schemas"]["RegisterRequest"]);
    assert_eq!(
        register["required"],
        serde_json::json!(["username", "email", "password"])
    );
    let forgot = &doc["components"]["schemas"]["ForgotRequest"];
    assert_eq!(forgot["required"], serde_json::json!(["identifier"]));
    let channels = forgot["properties"]["channel"]["enum"].as_array().unwrap();
    assert!(channels.contains(&"email".into()) && channels.contains(&"sms".into()));
    let reset = &doc["components"]["schemas"]["ResetRequest"];
    assert_eq!(
        reset["required"],
        serde_json::json!(["identifier", "new_password"])
    );
    let validated = &doc["paths"]["/validate-otp"]["post"]["responses"]["200"];
    assert_eq!(
        validated["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ValidateResponse"
    );
    // Metrics live on the operations listener, not in the public API.
    assert!(doc["paths"]["/metrics"].is_null());
}
