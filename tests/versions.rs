//! Tool versions: a changed spec becomes v2 at the next start; rollback pins
//! v1 and v1 serves; unpin follows the file again; history and diff show both.

mod common;

use common::*;
use serde_json::json;

const V1: &str = "name: greet\ndescription: Greets.\ninput_schema:\n  type: object\n  properties:\n    who: {type: string}\nallow: [admin]\nrun:\n  static:\n    text: \"hello {{ args.who }}\"\n";
const V1_REFORMATTED: &str = "# same content, other whitespace\nname:   greet\ndescription: Greets.\ninput_schema: {type: object, properties: {who: {type: string}}}\nallow: [admin]\nrun: {static: {text: \"hello {{ args.who }}\"}}\n";
const V2: &str = "name: greet\ndescription: Greets.\ninput_schema:\n  type: object\n  properties:\n    who: {type: string}\nallow: [admin]\nrun:\n  static:\n    text: \"bonjour {{ args.who }}\"\n";

async fn greet(f: &Fixture) -> (String, i64) {
    let client = f.client("alice").await;
    let tools = client.list_all_tools().await.unwrap();
    let greet = tools
        .iter()
        .find(|t| t.name == "greet")
        .expect("greet listed");
    let version = greet.meta.as_ref().unwrap().0["tollgate/version"]
        .as_i64()
        .unwrap();
    let r = call(&client, "greet", json!({"who": "ada"})).await;
    let rec = f.receipt(&receipt_id(&r)).await;
    assert_eq!(
        rec["version"], version,
        "receipt records the version that served"
    );
    client.cancel().await.unwrap();
    (text(&r), version)
}

#[tokio::test]
async fn change_rollback_unpin_history_diff() {
    let f = Fixture::empty();
    f.write_spec("greet", V1);
    assert_eq!(greet(&f).await, ("hello ada".to_string(), 1));

    // Whitespace and comments are not a new version.
    f.write_spec("greet", V1_REFORMATTED);
    assert_eq!(greet(&f).await, ("hello ada".to_string(), 1));

    f.write_spec("greet", V2);
    assert_eq!(greet(&f).await, ("bonjour ada".to_string(), 2));

    let out = f.run(&["tools", "rollback", "greet", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        greet(&f).await,
        ("hello ada".to_string(), 1),
        "pinned v1 serves although the file says v2"
    );

    let list = stdout(&f.run(&["tools", "list"]));
    let line = list.lines().find(|l| l.starts_with("greet")).unwrap();
    assert!(line.contains(" v1 ") && line.contains(" yes "), "{line}");

    let out = f.run(&["tools", "unpin", "greet"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out).trim(),
        "greet: unpinned; follows its spec file (v2)"
    );
    assert_eq!(greet(&f).await, ("bonjour ada".to_string(), 2));

    let history = stdout(&f.run(&["tools", "history", "greet"]));
    let rows: Vec<&str> = history.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{history}");
    assert!(
        rows[0].starts_with("v1 ") && rows[1].starts_with("v2 "),
        "{history}"
    );
    assert!(rows[1].ends_with("(active)"), "{history}");

    let diff = stdout(&f.run(&["tools", "diff", "greet", "1", "2"]));
    assert!(
        diff.contains("-    text: \"hello {{ args.who }}\""),
        "{diff}"
    );
    assert!(
        diff.contains("+    text: \"bonjour {{ args.who }}\""),
        "{diff}"
    );
}

#[tokio::test]
async fn rollback_to_a_missing_version_or_tool_says_what_exists() {
    let f = Fixture::empty();
    f.write_spec("greet", V1);
    let out = f.run(&["tools", "rollback", "greet", "7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no version 7"), "{}", stderr(&out));
    let out = f.run(&["tools", "rollback", "nope", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no tool named nope")
            || stderr(&out).contains("no tool named `nope`"),
        "{}",
        stderr(&out)
    );
    let out = f.run(&["tools", "diff", "greet", "1", "9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("tool `greet` has no version 9; it has v1"),
        "{}",
        stderr(&out)
    );
}
