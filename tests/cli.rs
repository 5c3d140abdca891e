//! `tollgate call`, `receipts list/show`, `schema` and `--help`.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn call_prints_result_and_receipt_and_receipts_can_be_queried() {
    let f = Fixture::new();
    let out = f.run(&[
        "call",
        "echo",
        "--principal",
        "bob",
        "--args",
        r#"{"message":"hi"}"#,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");
    let id = stderr(&out)
        .lines()
        .find_map(|l| l.strip_prefix("receipt: "))
        .unwrap()
        .to_string();

    let out = f.run(&[
        "call",
        "echo",
        "--principal",
        "bob",
        "--json",
        "--args",
        r#"{"message":7}"#,
    ]);
    assert_eq!(out.status.code(), Some(1), "invalid call exits 1");
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["is_error"], true);

    let shown: Value =
        serde_json::from_str(&stdout(&f.run(&["receipts", "show", &id, "--json"]))).unwrap();
    assert_eq!(shown["id"], id.as_str());
    assert_eq!(shown["transport"], "cli");
    assert_eq!(shown["principal"], "bob");
    let short = stdout(&f.run(&["receipts", "show", &id[..13]]));
    assert!(short.contains(&id), "{short}");

    let list: Vec<Value> = serde_json::from_str(&stdout(&f.run(&[
        "receipts",
        "list",
        "--json",
        "--decision",
        "invalid",
    ])))
    .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["decision"], "invalid");
    let list: Vec<Value> = serde_json::from_str(&stdout(&f.run(&[
        "receipts",
        "list",
        "--json",
        "--principal",
        "bob",
        "--since",
        "1h",
        "--tool",
        "echo",
    ])))
    .unwrap();
    assert_eq!(list.len(), 2);
    let list: Vec<Value> = serde_json::from_str(&stdout(&f.run(&[
        "receipts",
        "list",
        "--json",
        "--principal",
        "alice",
    ])))
    .unwrap();
    assert!(list.is_empty());
    let out = f.run(&["receipts", "show", "00000000-nope"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn schema_is_json_schema_of_the_spec_format() {
    let f = Fixture::new();
    let out = f.run(&["schema"]);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["title"], "ToolSpec");
    assert!(v["properties"]["run"].is_object());
    assert!(
        v["required"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "input_schema")
    );
}

#[test]
fn every_command_has_help_with_an_example() {
    let f = Fixture::new();
    for cmd in [
        vec!["serve"],
        vec!["check"],
        vec!["schema"],
        vec!["call"],
        vec!["tools", "list"],
        vec!["tools", "history"],
        vec!["tools", "diff"],
        vec!["tools", "rollback"],
        vec!["tools", "unpin"],
        vec!["receipts", "list"],
        vec!["receipts", "show"],
        vec!["receipts", "verify"],
        vec!["keys", "create"],
        vec!["keys", "list"],
        vec!["keys", "revoke"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let out = f.run(&args);
        assert!(out.status.success(), "{cmd:?}");
        assert!(
            stdout(&out).contains("Example"),
            "{cmd:?} --help has an example"
        );
    }
}

#[test]
fn the_shipped_example_specs_pass_check() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .current_dir(root)
        .env_remove("TOLLGATE_CONFIG")
        .env_remove("TOLLGATE_DB")
        .args(["check"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for tool in ["echo", "list_files", "http_get", "support_hours"] {
        assert!(text.contains(&format!("ok  {tool}")), "{text}");
    }
}

#[test]
fn flags_beat_env_beat_config_file_beat_defaults() {
    let f = Fixture::new();
    std::fs::create_dir(f.path("cfgdir")).unwrap();
    std::fs::write(
        f.path("cfgdir/tollgate.yaml"),
        "db: from-file.db\nprincipal: carol\n",
    )
    .unwrap();
    let cfg = f.path("cfgdir/tollgate.yaml");
    let cfg = cfg.to_str().unwrap();
    let echo = r#"{"message":"x"}"#;

    // The file's db and principal apply when neither env nor flag says otherwise
    // (paths relative to the config file).
    let out = f
        .command(&["--config", cfg, "call", "echo", "--args", echo])
        .env_remove("TOLLGATE_DB")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(f.path("cfgdir/from-file.db").exists());
    let shown = stdout(
        &f.command(&["--config", cfg, "receipts", "list", "--json"])
            .env_remove("TOLLGATE_DB")
            .output()
            .unwrap(),
    );
    assert!(shown.contains("\"principal\": \"carol\""), "{shown}");

    // The environment beats the file.
    let out = f
        .command(&["--config", cfg, "call", "echo", "--args", echo])
        .env("TOLLGATE_DB", f.path("from-env.db"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(f.path("from-env.db").exists());

    // A flag beats the environment.
    let flag_db = f.path("from-flag.db");
    let out = f
        .command(&[
            "--config",
            cfg,
            "--db",
            flag_db.to_str().unwrap(),
            "call",
            "echo",
            "--args",
            echo,
            "--principal",
            "bob",
        ])
        .env("TOLLGATE_DB", f.path("from-env.db"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(flag_db.exists());
    let shown = stdout(
        &f.command(&[
            "receipts",
            "list",
            "--json",
            "--db",
            flag_db.to_str().unwrap(),
        ])
        .output()
        .unwrap(),
    );
    assert!(
        shown.contains("\"principal\": \"bob\""),
        "flag beats the file's principal: {shown}"
    );
}

#[test]
fn governance_commands_refuse_bad_input_with_the_fix() {
    let f = Fixture::new();
    // No database yet: say so instead of creating one.
    let out = f.run(&["approvals", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no call has asked for approval yet"),
        "{}",
        stderr(&out)
    );
    let out = f.run(&[
        "call",
        "echo",
        "--principal",
        "bob",
        "--args",
        r#"{"message":"hi"}"#,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = f.run(&[
        "approvals",
        "deny",
        "ap_00000000",
        "--as",
        "alice",
        "--reason",
        " ",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--reason is empty; say why"),
        "{}",
        stderr(&out)
    );
    let out = f.run(&["approvals", "approve", "ap_00000000", "--as", "mallory"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--as mallory"), "{}", stderr(&out));
    let out = f.run(&["approvals", "approve", "ap_00000000", "--as", "alice"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("there is no approval `ap_00000000`"),
        "{}",
        stderr(&out)
    );
    let out = f.run(&["approvals", "show", "ap_0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("too short"), "{}", stderr(&out));
    let out = f.run(&["approvals", "list", "--status", "waiting"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");

    let out = f.run(&["costs", "--since", "soon"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--since `soon` is not a duration"),
        "{}",
        stderr(&out)
    );
    let out = f.run(&["costs", "--by", "weather"]);
    assert_eq!(out.status.code(), Some(2));
    let out = f.run(&["costs", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["total"]["calls"], 1, "{v}");

    let out = f.run(&["policies", "show", "abc"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("policy set hash \"abc\" is too short"),
        "{}",
        stderr(&out)
    );
    let out = f.run(&["policies", "history", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sets: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let hash = sets[0]["hash"].as_str().unwrap().to_owned();
    let out = f.run(&["policies", "show", &hash[..10]]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("@id(\"allow:echo:support\")"),
        "{}",
        stdout(&out)
    );
}
