//! The MCP front end: an rmcp [`ServerHandler`] that hands every `tools/call`
//! to the shared [`Pipeline`].
//!
//! The handler is cheap to clone (everything behind `Arc`), because rmcp's
//! HTTP transport builds one per session. It knows nothing about
//! permissions, limits or receipts: that is all the pipeline's job, so no
//! transport can grow a second code path for them.

mod reply;
mod tools;

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};

pub use reply::{META_RECEIPT_ID, to_mcp};
pub use tools::{META_SPEC_HASH, META_VERSION, definitions};

use crate::pipeline::{CallRequest, Identity, Origin, Pipeline};

/// One MCP session's view of tollgate.
#[derive(Clone)]
pub struct TollgateServer {
    pipeline: Arc<Pipeline>,
    tools: Arc<Vec<Tool>>,
    identity: Identity,
    origin: Origin,
}

impl TollgateServer {
    pub fn new(pipeline: Arc<Pipeline>, identity: Identity, origin: Origin) -> TollgateServer {
        let tools = Arc::new(definitions(&pipeline.catalog));
        TollgateServer {
            pipeline,
            tools,
            identity,
            origin,
        }
    }

    /// Serve MCP over stdin/stdout until the client disconnects.
    pub async fn serve_stdio(self) -> Result<(), std::io::Error> {
        let running = self
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| std::io::Error::other(format!("MCP handshake failed: {e}")))?;
        running
            .waiting()
            .await
            .map_err(|e| std::io::Error::other(format!("MCP session ended abnormally: {e}")))?;
        Ok(())
    }
}

impl ServerHandler for TollgateServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("tollgate", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Every tool call is checked, rate limited and receipted by tollgate. \
                 Each result's _meta carries `tollgate/receipt_id`.",
            )
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
        let req = CallRequest {
            tool: request.name.to_string(),
            arguments: request.arguments,
        };
        let reply = self
            .pipeline
            .call(&self.identity, self.origin.clone(), req)
            .await;
        to_mcp(reply).map(Into::into)
    }
}
