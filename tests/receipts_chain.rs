//! The receipt chain: concurrent bursts each get exactly one receipt, and
//! `receipts verify` catches edits, deletions and reordering.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_call_in_a_concurrent_burst_has_exactly_one_receipt() {
    let f = Fixture::new();
    let clients = [
        f.client("alice").await,
        f.client("bob").await,
        f.client("carol").await,
        f.client("alice").await,
    ];
    let mut tasks = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        for i in 0..50 {
            let peer = client.peer().clone();
            tasks.push(tokio::spawn(async move {
                let r = peer
                    .call_tool(call_params("echo", json!({"message": format!("c{c}-{i}")})))
                    .await
                    .expect("call");
                (format!("c{c}-{i}"), text(&r), receipt_id(&r))
            }));
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let (sent, got, id) = t.await.unwrap();
        assert_eq!(sent, got);
        ids.insert(id);
    }
    assert_eq!(ids.len(), 200, "every reply names its own receipt");
    let receipts = f.receipts().await;
    assert_eq!(receipts.len(), 200, "exactly one receipt per call");
    let stored: std::collections::BTreeSet<String> = receipts
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stored, ids);
    for (i, r) in receipts.iter().enumerate() {
        assert_eq!(r["seq"], (i + 1) as i64, "seq is contiguous");
        if i > 0 {
            assert_eq!(r["prev_hash"], receipts[i - 1]["hash"]);
        }
    }
    for c in clients {
        c.cancel().await.unwrap();
    }
    let out = f.run(&["receipts", "verify"]);
    assert!(out.status.success(), "{}", stdout(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("ok: 200 receipt(s) checked; the chain is intact")
    );
    let head = lines.next().unwrap_or_default();
    let last_hash = receipts[199]["hash"].as_str().unwrap();
    assert!(
        head.starts_with(&format!("head: receipt #200 hash {last_hash}")),
        "{head}"
    );
}

async fn chain_of(n: usize) -> Fixture {
    let f = Fixture::new();
    let client = f.client("alice").await;
    for i in 0..n {
        call(&client, "echo", json!({"message": format!("m{i}")})).await;
    }
    client.cancel().await.unwrap();
    let out = f.run(&["receipts", "verify"]);
    assert!(
        out.status.success(),
        "fresh chain verifies: {}",
        stdout(&out)
    );
    f
}

async fn tamper(f: &Fixture, sql: &[&str]) {
    let pool = f.pool().await;
    sqlx::query("DROP TRIGGER IF EXISTS receipts_no_update")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DROP TRIGGER IF EXISTS receipts_no_delete")
        .execute(&pool)
        .await
        .unwrap();
    for s in sql {
        sqlx::query(sqlx::AssertSqlSafe(s.to_string()))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

fn broken_at(f: &Fixture) -> String {
    let out = f.run(&["receipts", "verify"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify must fail: {}",
        stdout(&out)
    );
    stdout(&out)
}

#[tokio::test]
async fn the_server_cannot_update_or_delete_receipts() {
    let f = chain_of(2).await;
    let pool = f.pool().await;
    let upd = sqlx::query("UPDATE receipts SET decision = 'denied' WHERE seq = 1")
        .execute(&pool)
        .await;
    assert!(upd.unwrap_err().to_string().contains("append-only"));
    let del = sqlx::query("DELETE FROM receipts WHERE seq = 1")
        .execute(&pool)
        .await;
    assert!(del.unwrap_err().to_string().contains("append-only"));
}

#[tokio::test]
async fn verify_catches_an_edited_row() {
    let f = chain_of(5).await;
    tamper(
        &f,
        &[r#"UPDATE receipts SET args = '{"message":"forged"}' WHERE seq = 3"#],
    )
    .await;
    let out = broken_at(&f);
    assert!(out.starts_with("BROKEN: receipt #3 "), "{out}");
    assert!(out.contains("edited"), "{out}");
}

#[tokio::test]
async fn verify_catches_a_deleted_row() {
    let f = chain_of(5).await;
    tamper(&f, &["DELETE FROM receipts WHERE seq = 2"]).await;
    let out = broken_at(&f);
    assert!(out.starts_with("BROKEN: receipt #3 "), "{out}");
    assert!(out.contains("prev_hash"), "{out}");
}

#[tokio::test]
async fn verify_catches_a_swapped_pair() {
    let f = chain_of(5).await;
    // Swap the positions of receipts 2 and 4 (whole rows, hashes included).
    tamper(
        &f,
        &[
            "UPDATE receipts SET seq = 100 WHERE seq = 2",
            "UPDATE receipts SET seq = 2 WHERE seq = 4",
            "UPDATE receipts SET seq = 4 WHERE seq = 100",
        ],
    )
    .await;
    let out = broken_at(&f);
    assert!(out.starts_with("BROKEN: receipt #2 "), "{out}");
}
