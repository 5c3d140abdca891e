//! The fake payments API (`examples/payments_api.rs`) that the refund-desk
//! example and other tests use as a dangerous upstream: it must check its
//! key, validate bodies, record every refund (never deduplicate) and echo
//! headers.

#[path = "support/payments.rs"]
mod payments;

use std::time::{Duration, Instant};

use payments::PaymentsApi;
use serde_json::{Value, json};

const KEY: &str = "sk_test_payments_api_suite";

async fn post_refund(api: &PaymentsApi, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/refunds", api.url()))
        .header("Authorization", api.bearer())
        .json(body)
        .send()
        .await
        .expect("POST /refunds");
    let status = response.status().as_u16();
    let body = response.json().await.expect("JSON answer");
    (status, body)
}

#[tokio::test]
async fn every_request_needs_the_key() {
    let api = PaymentsApi::start(KEY);
    let client = reqwest::Client::new();
    let attempts: [(&str, Option<String>); 4] = [
        ("no header", None),
        ("wrong key", Some("Bearer sk_test_wrong".into())),
        ("key as prefix", Some(format!("Bearer {KEY}x"))),
        ("wrong scheme", Some(format!("Basic {KEY}"))),
    ];
    for path in ["/refunds", "/debug/headers", "/no-such-endpoint"] {
        for (what, header) in &attempts {
            let mut request = client.get(format!("{}{path}", api.url()));
            if let Some(h) = header {
                request = request.header("Authorization", h);
            }
            let response = request.send().await.expect("request");
            assert_eq!(response.status(), 401, "{what} on {path}");
            let body: Value = response.json().await.expect("JSON 401");
            assert_eq!(body, json!({"error": "missing or wrong API key"}), "{what}");
        }
    }
    let response = client
        .post(format!("{}/refunds", api.url()))
        .json(&json!({"order_id": "ord_1", "amount_cents": 100, "reason": "x"}))
        .send()
        .await
        .expect("POST without key");
    assert_eq!(response.status(), 401);
    assert!(
        api.refunds().await.is_empty(),
        "a refused POST records nothing"
    );
}

#[tokio::test]
async fn bad_refund_bodies_are_refused_naming_the_field() {
    let api = PaymentsApi::start(KEY);
    let good = json!({"order_id": "ord_42", "amount_cents": 1200, "reason": "damaged"});
    let mut cases = Vec::new();
    for (field, bad) in [
        ("order_id", json!(null)),
        ("order_id", json!(42)),
        ("order_id", json!("42")),
        ("order_id", json!("ord_")),
        ("amount_cents", json!(0)),
        ("amount_cents", json!(-5)),
        ("amount_cents", json!(12.5)),
        ("amount_cents", json!("1200")),
        ("reason", json!(7)),
        ("reason", json!(["a"])),
    ] {
        let mut body = good.clone();
        if bad.is_null() {
            body.as_object_mut().expect("object").remove(field);
        } else {
            body[field] = bad;
        }
        cases.push((field, body));
    }
    for field in ["amount_cents", "reason"] {
        let mut body = good.clone();
        body.as_object_mut().expect("object").remove(field);
        cases.push((field, body));
    }
    for (field, body) in cases {
        let (status, answer) = post_refund(&api, &body).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
        let message = answer["error"].as_str().expect("error message");
        assert!(message.contains(field), "{message}");
    }

    let (status, answer) = post_refund(&api, &json!(["not", "an", "object"])).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["error"].as_str().is_some(), "{answer}");

    let response = reqwest::Client::new()
        .post(format!("{}/refunds", api.url()))
        .header("Authorization", api.bearer())
        .header("Content-Type", "application/json")
        .body("{\"order_id\": ")
        .send()
        .await
        .expect("POST broken JSON");
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.expect("JSON 400");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("not valid JSON")),
        "{answer}"
    );

    assert!(
        api.refunds().await.is_empty(),
        "nothing invalid was recorded"
    );
}

#[tokio::test]
async fn refunds_are_recorded_in_order_and_never_deduplicated() {
    let api = PaymentsApi::start(KEY);
    let body = json!({"order_id": "ord_A1", "amount_cents": 1200, "reason": "damaged"});
    let (status, first) = post_refund(&api, &body).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(
        first,
        json!({
            "refund_id": "re_1",
            "order_id": "ord_A1",
            "amount_cents": 1200,
            "reason": "damaged",
            "status": "succeeded",
            "fee_usd": 0.3,
        })
    );
    // The very same request again is a second refund: protecting against
    // that is tollgate's job, not the API's.
    let (status, second) = post_refund(&api, &body).await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["refund_id"], "re_2");
    let other = json!({"order_id": "ord_B2", "amount_cents": 1, "reason": ""});
    let (status, third) = post_refund(&api, &other).await;
    assert_eq!(status, 201, "{third}");
    assert_eq!(third["refund_id"], "re_3");

    let refunds = api.refunds().await;
    let ids: Vec<&str> = refunds
        .iter()
        .map(|r| r["refund_id"].as_str().expect("refund_id"))
        .collect();
    assert_eq!(ids, ["re_1", "re_2", "re_3"]);
    let orders: Vec<&str> = refunds
        .iter()
        .map(|r| r["order_id"].as_str().expect("order_id"))
        .collect();
    assert_eq!(orders, ["ord_A1", "ord_A1", "ord_B2"]);
    let mut previous = None;
    for refund in &refunds {
        assert_eq!(refund["status"], "succeeded");
        assert_eq!(refund["fee_usd"], 0.3);
        let at = refund["received_at"].as_str().expect("received_at");
        let at = chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339 received_at");
        assert!(previous.is_none_or(|p| p <= at), "in order");
        previous = Some(at);
    }
    assert_eq!(refunds[2]["amount_cents"], 1);
    assert!(api.logs().contains("refund recorded"), "{}", api.logs());
}

#[tokio::test]
async fn debug_headers_echoes_the_request_headers() {
    let api = PaymentsApi::start(KEY);
    let response = reqwest::Client::new()
        .get(format!("{}/debug/headers", api.url()))
        .header("Authorization", api.bearer())
        .header("X-Request-Id", "req-7")
        .send()
        .await
        .expect("GET /debug/headers");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    let headers = &body["headers"];
    assert_eq!(headers["authorization"], format!("Bearer {KEY}"), "{body}");
    assert_eq!(headers["x-request-id"], "req-7", "{body}");
    assert_eq!(
        headers["host"],
        format!("127.0.0.1:{}", api.port()),
        "{body}"
    );
}

#[tokio::test]
async fn delay_ms_holds_each_refund_and_concurrent_refunds_all_land() {
    let api = PaymentsApi::start_with(KEY, &["--delay-ms", "300"]);
    let body = json!({"order_id": "ord_C3", "amount_cents": 500, "reason": "retry storm"});
    let started = Instant::now();
    let (a, b) = tokio::join!(post_refund(&api, &body), post_refund(&api, &body));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!((a.0, b.0), (201, 201), "{a:?} {b:?}");
    let mut ids = [a.1["refund_id"].clone(), b.1["refund_id"].clone()];
    ids.sort_by_key(|v| v.as_str().map(str::to_owned));
    assert_eq!(ids, [json!("re_1"), json!("re_2")]);
    assert_eq!(api.refunds().await.len(), 2);
}

#[test]
fn refuses_to_start_without_a_key() {
    for key_env in [None, Some("")] {
        let mut cmd = std::process::Command::new(payments::binary());
        cmd.args(["--port", "0"]).env_remove("PAYMENTS_API_KEY");
        if let Some(k) = key_env {
            cmd.env("PAYMENTS_API_KEY", k);
        }
        let out = cmd.output().expect("run payments_api");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--api-key") && stderr.contains("PAYMENTS_API_KEY"),
            "{stderr}"
        );
    }
}
