//! A bare MCP server with one `echo` tool: the speed ceiling tollgate is
//! measured against (see BENCHMARKS.md).
//!
//! Same stack as `tollgate serve` (rmcp 3.9 Streamable HTTP on axum, a
//! `LocalSessionManager`, TCP_NODELAY, mimalloc, rmcp's default loopback-only
//! allowed hosts; or rmcp's stdio transport), and nothing else: no
//! authentication, no database, no validation, no limits, no receipts.
//!
//! ```sh
//! cargo run --release --example bare_echo -- --addr 127.0.0.1:8090   # http://127.0.0.1:8090/mcp
//! cargo run --release --example bare_echo -- --stdio
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use clap::Parser;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::json;

/// The same allocator as `tollgate` (see src/main.rs), so the ratio
/// measures governance, not allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "A bare rmcp echo server (no auth, no db, no governance), for benchmarks")]
struct Args {
    /// Serve Streamable HTTP at http://ADDR/mcp.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8090")]
    addr: SocketAddr,
    /// Serve MCP over stdin/stdout instead of HTTP.
    #[arg(long)]
    stdio: bool,
}

/// The whole server: one tool definition, shared by every session.
#[derive(Clone)]
struct BareEcho {
    tools: Arc<Vec<Tool>>,
}

impl BareEcho {
    fn new() -> BareEcho {
        let schema = json!({
            "type": "object",
            "properties": { "message": { "type": "string" } },
            "required": ["message"],
        });
        let serde_json::Value::Object(schema) = schema else {
            unreachable!("the schema literal is an object")
        };
        let echo = Tool::new(
            "echo",
            "Returns the given message unchanged.",
            Arc::new(schema),
        );
        BareEcho {
            tools: Arc::new(vec![echo]),
        }
    }
}

impl ServerHandler for BareEcho {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("bare_echo", env!("CARGO_PKG_VERSION")))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.as_ref().clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name != "echo" {
            return Err(ErrorData::invalid_params(
                format!("unknown tool `{}`; this server has `echo`", request.name),
                None,
            ));
        }
        let message = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("message"))
            .and_then(|m| m.as_str());
        let result = match message {
            Some(m) => CallToolResult::success(vec![ContentBlock::text(m)]),
            None => {
                CallToolResult::error(vec![ContentBlock::text("`message` (a string) is required")])
            }
        };
        Ok(result.into())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.stdio {
        let running = BareEcho::new().serve(rmcp::transport::stdio()).await?;
        running.waiting().await?;
        return Ok(());
    }
    let server = BareEcho::new();
    let mcp = StreamableHttpService::new(
        move || Ok(server.clone()),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().nest_service("/mcp", mcp);
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    eprintln!(
        "bare_echo serving MCP at http://{}/mcp",
        listener.local_addr()?
    );
    // Nagle + delayed ACK would hold each small SSE write ~40 ms.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
