//! stdio with an answer for every line.
//!
//! rmcp's stdio codec drops a line that serde_json refuses (a number out of
//! range such as `1e400`, nesting deeper than 128, a lone surrogate `\ud800`)
//! without a word, so a client that sent a request waits forever. This shim
//! sits between the process's stdin/stdout and rmcp: it reads stdin line by
//! line, answers a line that is not JSON with a JSON-RPC `-32700 Parse error`
//! (id `null`, since no id can be read from it), and hands every other line
//! to rmcp unchanged. Output from rmcp and from the shim goes through one
//! writer, a whole line at a time, so the two never interleave.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;

/// Buffer between the shim and rmcp, each way.
const PIPE_BYTES: usize = 64 * 1024;

/// The (reader, writer) pair to give rmcp instead of `rmcp::transport::stdio()`.
pub fn transport() -> (DuplexStream, DuplexStream) {
    wrap(tokio::io::stdin(), tokio::io::stdout())
}

/// The shim over any byte streams (tests use in-memory ones).
pub fn wrap<R, W>(input: R, output: W) -> (DuplexStream, DuplexStream)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (rmcp_in, mut to_rmcp) = tokio::io::duplex(PIPE_BYTES);
    let (rmcp_out, from_rmcp) = tokio::io::duplex(PIPE_BYTES);
    let (errors_tx, errors_rx) = mpsc::channel::<Vec<u8>>(16);
    tokio::spawn(async move {
        let mut lines = BufReader::new(input);
        let mut line = Vec::new();
        loop {
            line.clear();
            match lines.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if let Some(reply) = parse_error_reply(&line) {
                if errors_tx.send(reply).await.is_err() {
                    break;
                }
                continue;
            }
            if to_rmcp.write_all(&line).await.is_err() {
                break;
            }
        }
        // End of input: rmcp sees EOF and finishes the session.
        let _ = to_rmcp.shutdown().await;
    });
    tokio::spawn(write_out(from_rmcp, errors_rx, output));
    (rmcp_in, rmcp_out)
}

/// `Some(reply line)` when `line` is not empty and not JSON.
fn parse_error_reply(line: &[u8]) -> Option<Vec<u8>> {
    let trimmed = line.trim_ascii();
    // rmcp accepts a line that starts with a UTF-8 byte-order mark.
    let trimmed = trimmed.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(trimmed);
    if trimmed.is_empty() {
        return None;
    }
    let err = serde_json::from_slice::<serde_json::Value>(trimmed).err()?;
    let reply = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": -32700, "message": format!("Parse error: the line is not valid JSON ({err})")},
    });
    let mut out = reply.to_string().into_bytes();
    out.push(b'\n');
    Some(out)
}

/// Copy rmcp's output and the shim's own replies to `output`, whole lines.
async fn write_out<W: AsyncWrite + Unpin>(
    from_rmcp: DuplexStream,
    mut errors: mpsc::Receiver<Vec<u8>>,
    mut output: W,
) {
    let mut rmcp_lines = BufReader::new(from_rmcp);
    let mut line = Vec::new();
    let mut errors_open = true;
    loop {
        tokio::select! {
            // The shim's own replies first: one is queued before any later
            // line reaches rmcp, so a client reads the answers in the order
            // it sent the lines (a random pick once sent a `ping` reply
            // ahead of the parse error of the line before it).
            biased;
            reply = errors.recv(), if errors_open => match reply {
                Some(reply) => {
                    if output.write_all(&reply).await.is_err() || output.flush().await.is_err() {
                        break;
                    }
                }
                None => errors_open = false,
            },
            read = rmcp_lines.read_until(b'\n', &mut line) => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                            break;
                        }
                        line.clear();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lines_serde_refuses_get_a_parse_error() {
        assert!(parse_error_reply(b"\n").is_none());
        assert!(
            parse_error_reply(b"{\"jsonrpc\":\"2.0\",\"method\":\"ping\",\"id\":1}\n").is_none()
        );
        for bad in [
            &b"{\"a\":1e400}\n"[..],
            b"{\"a\":\"\\ud800\"}\n",
            b"{oops\n",
        ] {
            let reply = parse_error_reply(bad).expect("a reply");
            let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
            assert_eq!(v["error"]["code"], -32700);
            assert_eq!(v["id"], serde_json::Value::Null);
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("Parse error")
            );
        }
    }

    /// A parse error queued before rmcp's next line is ready goes out first,
    /// every time (an unbiased pick put it second about half the time).
    #[tokio::test]
    async fn a_queued_parse_error_goes_out_before_rmcps_next_line() {
        for _ in 0..50 {
            let (mut rmcp_side, from_rmcp) = tokio::io::duplex(1024);
            let (errors_tx, errors_rx) = mpsc::channel(16);
            errors_tx.send(b"error\n".to_vec()).await.unwrap();
            rmcp_side.write_all(b"pong\n").await.unwrap();
            drop((rmcp_side, errors_tx));
            let mut out = Vec::new();
            write_out(from_rmcp, errors_rx, &mut out).await;
            assert_eq!(out, b"error\npong\n");
        }
    }
}
