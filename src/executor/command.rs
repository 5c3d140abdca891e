//! The `command` executor: run a program directly, never through a shell.
//!
//! Each argv element is one template and renders to exactly one argv element,
//! so an argument value can never split into several arguments, join two, or
//! be interpreted by a shell (`; rm -rf /` arrives as that literal string).
//! The program itself (`argv[0]`) must be literal: the model never chooses
//! what runs.
//!
//! The child gets a cleared environment plus an allowlist, null stdin, and
//! its own process group, so a timeout can kill everything it started.
//!
//! Secrets reach a program through `{{ secret.NAME }}` in argv elements or
//! `set_env` values, resolved when the call runs. `set_env` is the better
//! place: argv is visible to every user of the machine in `ps`.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{CompileContext, ExecError, ExecOutput};
use crate::secrets::{ENV_PREFIX, Resolved, Secrets};
use crate::spec::issue::SpecIssue;
use crate::template::{Root, Scope, Template};

/// How much of stderr a failure message shows (its end, where errors usually are).
const STDERR_TAIL_BYTES: usize = 2048;

/// `run: { command: {..} }`
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct CommandSpec {
    /// Program and arguments. `argv[0]` must be a literal program path or
    /// name; other elements may contain `{{ args.NAME }}` placeholders. Each
    /// element becomes exactly one argument, and an element whose placeholder
    /// is absent is left out entirely.
    pub argv: Vec<String>,
    /// Working directory for the program (default: tollgate's own).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Names of environment variables copied from tollgate's environment.
    /// Everything else is cleared, so secrets in tollgate's environment do
    /// not leak into tools by accident. `TOLLGATE_SECRET_*` variables cannot
    /// be listed: pass a secret with `set_env` and `{{ secret.NAME }}`.
    #[serde(default = "default_env")]
    pub env: Vec<String>,
    /// Extra environment variables. Values are literal text, optionally with
    /// `{{ secret.NAME }}` placeholders (not `args`).
    #[serde(default)]
    pub set_env: BTreeMap<String, String>,
    /// Cap on captured stdout and on captured stderr, each, in bytes. Output
    /// past the cap is read and discarded (so the program never blocks) and
    /// the result says it was truncated.
    #[serde(default = "default_max_output_bytes")]
    pub max_output_bytes: usize,
    /// How to read stdout: `text` (default) or `json` (must parse as JSON;
    /// becomes the structured result).
    #[serde(default)]
    pub output: OutputFormat,
}

/// How a command's stdout becomes the result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// Return stdout as text.
    #[default]
    Text,
    /// Parse stdout as JSON and return it as the structured result.
    Json,
}

fn default_env() -> Vec<String> {
    vec!["PATH".to_owned()]
}

fn default_max_output_bytes() -> usize {
    1 << 20
}

/// A checked `command` spec.
#[derive(Debug, Clone)]
pub struct CompiledCommand {
    program: String,
    args: Vec<Template>,
    cwd: Option<PathBuf>,
    env: Vec<String>,
    set_env: Vec<(String, Template)>,
    max_output_bytes: usize,
    output: OutputFormat,
    secrets: Arc<Secrets>,
    /// The secrets argv and `set_env` refer to, resolved at the start of each call.
    secret_names: Vec<String>,
}

impl CommandSpec {
    pub fn compile(&self, ctx: &CompileContext) -> Result<CompiledCommand, Vec<SpecIssue>> {
        let mut issues = Vec::new();
        let mut templates = Vec::new();
        for (i, element) in self.argv.iter().enumerate() {
            let field = format!("run.command.argv[{i}]");
            match Template::compile(element, &field, ctx.known()) {
                Ok(t) => templates.push(t),
                Err(mut found) => issues.append(&mut found),
            }
        }
        let program = match self.argv.first() {
            None => {
                issues.push(
                    SpecIssue::at(
                        "run.command.argv",
                        "argv is empty; it needs at least the program to run",
                    )
                    .hint("e.g. argv: [\"ls\", \"-la\"]"),
                );
                String::new()
            }
            Some(p) if p.is_empty() => {
                issues.push(SpecIssue::at(
                    "run.command.argv[0]",
                    "the program name is empty",
                ));
                String::new()
            }
            Some(p) if p.contains("{{") => {
                issues.push(
                    SpecIssue::at("run.command.argv[0]", "the program to run must be literal, not a placeholder")
                        .hint("the model must never choose which program runs; pass the value as a later argv element"),
                );
                String::new()
            }
            Some(p) => p.clone(),
        };
        for (i, name) in self.env.iter().enumerate() {
            if !is_env_name(name) {
                issues.push(
                    SpecIssue::at(
                        format!("run.command.env[{i}]"),
                        format!("`{name}` is not a valid environment variable name"),
                    )
                    .hint(
                        "list variable names only, e.g. env: [PATH, LANG]; use set_env for values",
                    ),
                );
            } else if let Some(secret) = name.strip_prefix(ENV_PREFIX) {
                issues.push(
                    SpecIssue::at(
                        format!("run.command.env[{i}]"),
                        format!("`{name}` holds a tollgate secret and cannot be copied"),
                    )
                    .hint(format!(
                        "pass it explicitly: set_env: {{ {secret}: \"{{{{ secret.{secret} }}}}\" }}"
                    )),
                );
            }
        }
        let mut set_env = Vec::new();
        for (name, value) in &self.set_env {
            let field = format!("run.command.set_env.{name}");
            if !is_env_name(name) {
                issues.push(SpecIssue::at(
                    &field,
                    format!("`{name}` is not a valid environment variable name"),
                ));
            }
            if value.contains('\0') {
                issues.push(SpecIssue::at(
                    &field,
                    "the value contains a NUL byte, which no program can receive",
                ));
            }
            match Template::compile(value, &field, ctx.known()) {
                Ok(t) if t.placeholders().any(|p| p.root == Root::Args) => issues.push(
                    SpecIssue::at(
                        &field,
                        "set_env values may use `{{ secret.NAME }}` placeholders, not `{{ args.… }}`",
                    )
                    .hint("pass arguments as argv elements"),
                ),
                Ok(t) => set_env.push((name.clone(), t)),
                Err(mut found) => issues.append(&mut found),
            }
        }
        if self.cwd.as_ref().is_some_and(|c| c.as_os_str().is_empty()) {
            issues.push(
                SpecIssue::at("run.command.cwd", "cwd is empty")
                    .hint("remove it, or give a directory path"),
            );
        }
        if self.max_output_bytes == 0 {
            issues.push(
                SpecIssue::at(
                    "run.command.max_output_bytes",
                    "max_output_bytes must be greater than 0",
                )
                .hint("leave it out for the default of 1048576 (1 MiB)"),
            );
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        let secret_names =
            super::secret_names(templates.iter().chain(set_env.iter().map(|(_, t)| t)));
        Ok(CompiledCommand {
            program,
            args: templates.split_off(1),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            set_env,
            max_output_bytes: self.max_output_bytes,
            output: self.output,
            secrets: ctx.secrets.clone(),
            secret_names,
        })
    }
}

/// POSIX-portable names, plus lower case: no `=`, no NUL, not empty.
fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl CompiledCommand {
    /// The arguments after `argv[0]` for a call with `args`, one element per
    /// template, without running anything. Public for the fuzz targets.
    pub fn render_args(&self, args: &Map<String, Value>) -> Result<Vec<String>, ExecError> {
        let secrets = self.resolve_secrets()?;
        self.render_argv(Scope::new(args, secrets.map()))
    }

    /// This call's values of the secrets the spec refers to.
    fn resolve_secrets(&self) -> Result<Resolved, ExecError> {
        if self.secret_names.is_empty() {
            return Ok(Resolved::none());
        }
        self.secrets
            .resolve(self.secret_names.iter().map(String::as_str))
            .map_err(|e| ExecError::NotStarted(e.to_string()))
    }

    fn render_argv(&self, args: Scope<'_>) -> Result<Vec<String>, ExecError> {
        let mut argv = Vec::with_capacity(self.args.len());
        for (i, template) in self.args.iter().enumerate() {
            // An element referring to an absent argument is left out whole,
            // so optional flags like `--limit={{ args.limit }}` just vanish.
            let Ok(arg) = template.render(args) else {
                continue;
            };
            if arg.contains('\0') {
                return Err(ExecError::Failed(format!(
                    "argv[{}] contains a NUL byte, which cannot be passed to a program",
                    i + 1
                )));
            }
            argv.push(arg);
        }
        Ok(argv)
    }

    pub async fn run(
        &self,
        args: &Map<String, Value>,
        timeout: Duration,
    ) -> Result<ExecOutput, ExecError> {
        let secrets = self.resolve_secrets()?;
        let args = Scope::new(args, secrets.map());
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(self.render_argv(args)?);
        cmd.env_clear();
        for name in &self.env {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        for (name, template) in &self.set_env {
            // Every placeholder here is a secret, resolved above.
            let value = template.render(args).map_err(|absent| {
                ExecError::NotStarted(format!(
                    "set_env `{name}` needs secret `{}`, which is not defined",
                    absent.0.path[0]
                ))
            })?;
            if value.contains('\0') {
                return Err(ExecError::Failed(format!(
                    "set_env `{name}` contains a NUL byte, which cannot be passed to a program"
                )));
            }
            cmd.env(name, value);
        }
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);

        let mut child = cmd.spawn().map_err(|e| self.spawn_error(&e))?;
        // The child leads its own group, so the group id is its pid.
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        // If this future is dropped (shutdown interrupt, the pipeline's outer
        // timeout), `kill_on_drop` reaches only the leader: the guard kills
        // the whole group.
        let _group_guard = GroupKill(group);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let cap = self.max_output_bytes;
        let finished = tokio::time::timeout(timeout, async {
            let out = tokio::spawn(read_capped(stdout, cap));
            let err = tokio::spawn(read_capped(stderr, cap));
            let status = child.wait().await;
            // A background process the command left behind may hold the
            // pipes open: after the command exits, give the readers a moment,
            // then end the group so they see end-of-file.
            let readers = async { (out.await, err.await) };
            tokio::pin!(readers);
            let (out, err) = match tokio::time::timeout(PIPE_GRACE, &mut readers).await {
                Ok(done) => done,
                Err(_) => {
                    if let Some(group) = group {
                        let _ = killpg(group, Signal::SIGKILL);
                    }
                    readers.await
                }
            };
            (out.unwrap_or_default(), err.unwrap_or_default(), status)
        })
        .await;
        // Kill whatever is left of the group: on timeout, the whole tree; on
        // success, stray background processes, so no call leaves anything
        // running. (Errors mean the group is already gone.) On success the
        // leader is already reaped, but Linux does not hand out a pid while
        // it is still some group's id, so this cannot hit a stranger unless
        // the group emptied and the pid was reused in between: a window of
        // microseconds that we accept.
        if let Some(group) = group {
            let _ = killpg(group, Signal::SIGKILL);
        }
        let Ok((stdout, stderr, status)) = finished else {
            let _ = child.wait().await;
            return Err(ExecError::Timeout(timeout));
        };
        let status = status.map_err(|e| {
            ExecError::Failed(format!("could not wait for `{}`: {e}", self.program))
        })?;
        Ok(self.output(status, stdout, stderr))
    }

    fn spawn_error(&self, e: &std::io::Error) -> ExecError {
        if let Some(cwd) = &self.cwd
            && !cwd.is_dir()
        {
            return ExecError::NotStarted(format!(
                "could not start `{}`: working directory `{}` does not exist",
                self.program,
                cwd.display()
            ));
        }
        let message = format!("could not start `{}`: {}", self.program, io_cause(e));
        // Only exec's own refusals prove that the program never ran. Spawning
        // can also fail after the child exists (registering its pipes or its
        // reaper), and then it may be running: that is a plain failure.
        let exec_refused = matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
        ) || e.raw_os_error().is_some_and(|code| {
            use nix::errno::Errno;
            [
                Errno::ENOEXEC,
                Errno::ENOTDIR,
                Errno::ELOOP,
                Errno::ENAMETOOLONG,
            ]
            .contains(&Errno::from_raw(code))
        });
        if exec_refused {
            ExecError::NotStarted(message)
        } else {
            ExecError::Failed(message)
        }
    }

    fn output(&self, status: ExitStatus, stdout: Captured, stderr: Captured) -> ExecOutput {
        if !status.success() {
            let mut text = describe_status(status);
            let err = String::from_utf8_lossy(&stderr.bytes);
            let err = tail(err.trim_end(), STDERR_TAIL_BYTES);
            if !err.is_empty() {
                text.push_str("\nstderr:\n");
                text.push_str(err);
            }
            return ExecOutput::error(text);
        }
        let out = String::from_utf8_lossy(&stdout.bytes).into_owned();
        match self.output {
            OutputFormat::Text => {
                let mut text = out;
                if stdout.truncated {
                    text.push_str(&format!(
                        "\n[output truncated at {} bytes]",
                        self.max_output_bytes
                    ));
                }
                ExecOutput::text(text)
            }
            OutputFormat::Json if stdout.truncated => ExecOutput::error(format!(
                "the command printed more than {} bytes, so its JSON output was cut off; raise run.command.max_output_bytes",
                self.max_output_bytes
            )),
            OutputFormat::Json => match serde_json::from_str::<Value>(&out) {
                Ok(value) => ExecOutput {
                    text: out,
                    structured: Some(value),
                    is_error: false,
                },
                Err(e) => ExecOutput::error(format!(
                    "the command's output is not valid JSON ({e}), but the tool declares `output: json`"
                )),
            },
        }
    }
}

/// The OS's description of an I/O error, without Rust's "(os error N)".
fn io_cause(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_owned(),
        None => e.to_string(),
    }
}

fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(sig) => match Signal::try_from(sig) {
            Ok(name) => format!("killed by signal {sig} ({name})"),
            Err(_) => format!("killed by signal {sig}"),
        },
        None => "terminated abnormally".to_owned(),
    }
}

/// The last `max` bytes of `s`, starting on a character boundary.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

/// How long output pipes may stay open after the command itself exited.
const PIPE_GRACE: Duration = Duration::from_millis(100);

/// Read to EOF, keeping at most `cap` bytes. We keep reading past the cap so
/// a chatty child never blocks on a full pipe. A read error ends the capture
/// early (the exit status still tells the story).
async fn read_capped(reader: Option<impl AsyncRead + Unpin>, cap: usize) -> Captured {
    let mut captured = Captured {
        bytes: Vec::new(),
        truncated: false,
    };
    let Some(mut reader) = reader else {
        return captured;
    };
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return captured,
            Ok(n) => {
                let room = cap.saturating_sub(captured.bytes.len());
                captured.bytes.extend_from_slice(&buf[..n.min(room)]);
                captured.truncated |= n > room;
            }
        }
    }
}

/// Kills a process group when dropped, so an abandoned run leaves nothing behind.
struct GroupKill(Option<Pid>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            // An error means the group is already gone.
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{args, ctx, run_spec};
    use super::*;
    use serde_json::json;
    use std::time::Instant;

    async fn run(
        yaml: &str,
        props: &[&str],
        a: Value,
        timeout: Duration,
    ) -> Result<ExecOutput, ExecError> {
        let compiled = run_spec(yaml).compile(&ctx(props)).expect("spec compiles");
        compiled.run(&args(a), timeout).await
    }

    const SEC: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn echo_and_printf() {
        let out = run(
            "command: { argv: [echo, hello, '{{ args.who }}'] }",
            &["who"],
            json!({"who": "world"}),
            SEC,
        )
        .await;
        assert_eq!(out, Ok(ExecOutput::text("hello world\n")));
        let out = run(
            "command: { argv: [printf, '%s|%s', a, '{{ args.n }}'] }",
            &["n"],
            json!({"n": 7}),
            SEC,
        )
        .await;
        assert_eq!(out.unwrap().text, "a|7");
    }

    #[tokio::test]
    async fn hostile_values_stay_one_argument() {
        let yaml = "command: { argv: [printf, '%s\\n', '{{ args.x }}', '{{ args.y }}'] }";
        let out = run(
            yaml,
            &["x", "y"],
            json!({"x": "; rm -rf /", "y": "$(id) `id` a b"}),
            SEC,
        )
        .await;
        assert_eq!(out.unwrap().text, "; rm -rf /\n$(id) `id` a b\n");
    }

    #[tokio::test]
    async fn absent_optional_argument_is_omitted() {
        let yaml = "command: { argv: [printf, '[%s]', a, '--limit={{ args.limit }}', b] }";
        let out = run(yaml, &["limit"], json!({}), SEC).await;
        assert_eq!(out.unwrap().text, "[a][b]");
        let out = run(yaml, &["limit"], json!({"limit": null}), SEC).await;
        assert_eq!(out.unwrap().text, "[a][b]");
    }

    #[tokio::test]
    async fn non_zero_exit_is_a_tool_error() {
        let yaml = r#"command: { argv: [sh, -c, "echo oops >&2; exit 3"] }"#;
        let out = run(yaml, &[], json!({}), SEC).await.unwrap();
        assert!(out.is_error);
        assert_eq!(out.text, "exit status 3\nstderr:\noops");
        let yaml = r#"command: { argv: [sh, -c, "kill -TERM $$"] }"#;
        let out = run(yaml, &[], json!({}), SEC).await.unwrap();
        assert_eq!(out.text, "killed by signal 15 (SIGTERM)");
    }

    #[tokio::test]
    async fn spawn_failure_names_the_program() {
        let out = run("command: { argv: [/no/such/program] }", &[], json!({}), SEC).await;
        assert_eq!(
            out,
            Err(ExecError::NotStarted(
                "could not start `/no/such/program`: No such file or directory".into()
            ))
        );
        let out = run(
            "command: { argv: [ls], cwd: /no/such/dir }",
            &[],
            json!({}),
            SEC,
        )
        .await;
        assert!(
            matches!(out, Err(ExecError::NotStarted(m)) if m.contains("working directory `/no/such/dir`"))
        );
    }

    #[tokio::test]
    async fn environment_is_cleared_except_the_allowlist() {
        let yaml = "command: { argv: [env], set_env: { GREETING: hi } }";
        let text = run(yaml, &[], json!({}), SEC).await.unwrap().text;
        let mut names: Vec<&str> = text.lines().filter_map(|l| l.split('=').next()).collect();
        names.sort();
        assert_eq!(names, ["GREETING", "PATH"]);
    }

    #[tokio::test]
    async fn json_output() {
        let yaml = r#"command: { argv: [printf, '{"n": %s}', "{{ args.n }}"], output: json }"#;
        let out = run(yaml, &["n"], json!({"n": 5}), SEC).await.unwrap();
        assert_eq!(out.structured, Some(json!({"n": 5})));
        let out = run(
            "command: { argv: [echo, nope], output: json }",
            &[],
            json!({}),
            SEC,
        )
        .await
        .unwrap();
        assert!(
            out.is_error && out.text.contains("not valid JSON"),
            "{}",
            out.text
        );
    }

    #[tokio::test]
    async fn output_is_capped() {
        let yaml = r#"command: { argv: [sh, -c, "head -c 100000 /dev/zero | tr '\\0' x"], max_output_bytes: 10 }"#;
        let out = run(yaml, &[], json!({}), SEC).await.unwrap();
        assert_eq!(out.text, "xxxxxxxxxx\n[output truncated at 10 bytes]");
    }

    #[tokio::test]
    async fn timeout_kills_the_child() {
        let start = Instant::now();
        let out = run(
            "command: { argv: [sleep, '10'] }",
            &[],
            json!({}),
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(out, Err(ExecError::Timeout(Duration::from_millis(300))));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    /// Live (non-zombie) processes in process group `pgid`, from /proc.
    fn live_members(pgid: i32) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid pgrp ...`; comm may hold spaces, so split after `)`.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.get(2) == Some(&pgid.to_string().as_str()) && fields.first() != Some(&"Z") {
                found.push(stat);
            }
        }
        found
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let yaml = format!(
            "command: {{ argv: [sh, -c, 'echo $$ > {}; sleep 30 & sleep 30'] }}",
            pid_file.display()
        );
        let start = Instant::now();
        let out = run(&yaml, &[], json!({}), Duration::from_millis(500)).await;
        assert!(matches!(out, Err(ExecError::Timeout(_))), "{out:?}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        let pgid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(live_members(pgid), Vec::<String>::new());
    }

    #[tokio::test]
    async fn secrets_reach_argv_and_set_env_at_call_time() {
        use super::super::test_support::{ctx_with, secrets};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ROTATING"), "first-value\n").unwrap();
        let from_dir = Secrets::from_vars(
            vec![("TOLLGATE_SECRET_FIXED", "fixed-value")],
            Some(dir.path()),
        )
        .unwrap();
        let yaml = r#"command: { argv: [sh, -c, 'printf "%s|%s|%s" "$1" "$ROT" "$FIX"', sh, '--key={{ secret.ROTATING }}'], set_env: { ROT: '{{ secret.ROTATING }}', FIX: 'x-{{ secret.FIXED }}' } }"#;
        let compiled = run_spec(yaml).compile(&ctx_with(&[], from_dir)).unwrap();
        let out = compiled.run(&args(json!({})), SEC).await.unwrap();
        assert_eq!(out.text, "--key=first-value|first-value|x-fixed-value");
        std::fs::write(dir.path().join("ROTATING"), "second-value").unwrap();
        let out = compiled.run(&args(json!({})), SEC).await.unwrap();
        assert_eq!(out.text, "--key=second-value|second-value|x-fixed-value");
        // Removed after start-up: the call fails, naming the secret only.
        std::fs::remove_file(dir.path().join("ROTATING")).unwrap();
        let Err(ExecError::NotStarted(msg)) = compiled.run(&args(json!({})), SEC).await else {
            panic!("expected a failure before the program starts")
        };
        assert!(msg.starts_with("secret `ROTATING` is not defined"), "{msg}");

        // set_env takes secrets only; env may not copy TOLLGATE_SECRET_*.
        let yaml =
            "command: { argv: [env], env: [TOLLGATE_SECRET_K], set_env: { A: '{{ args.a }}' } }";
        let issues = run_spec(yaml)
            .compile(&ctx_with(&["a"], secrets(&[("K", "value-1234")])))
            .unwrap_err();
        let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(fields, ["run.command.env[0]", "run.command.set_env.A"]);
        assert!(
            issues[0]
                .hint
                .as_deref()
                .unwrap()
                .contains("K: \"{{ secret.K }}\""),
            "{:?}",
            issues[0].hint
        );
    }

    #[test]
    fn compile_reports_every_problem() {
        let yaml = r#"command: { argv: ["{{ args.prog }}", "{{ args.mesage }}", "{{ oops }}"], env: ["A=B"], max_output_bytes: 0 }"#;
        let issues = run_spec(yaml)
            .compile(&ctx(&["prog", "message"]))
            .unwrap_err();
        let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "run.command.argv[1]",
                "run.command.argv[2]",
                "run.command.argv[0]",
                "run.command.env[0]",
                "run.command.max_output_bytes"
            ]
        );
        assert_eq!(issues[0].message, "unknown placeholder `args.mesage`");
        let issues = run_spec("command: { argv: [] }")
            .compile(&ctx(&[]))
            .unwrap_err();
        assert_eq!(issues[0].field, "run.command.argv");
    }
}
