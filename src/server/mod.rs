//! The MCP front end: an rmcp [`ServerHandler`] that hands every `tools/call`
//! to the shared [`Pipeline`].
//!
//! The handler is cheap to clone (everything behind `Arc`), because rmcp's
//! HTTP transport builds one per session. It knows nothing about
//! permissions, limits or receipts: that is all the pipeline's job, so no
//! transport can grow a second code path for them.

mod reply;
pub mod stdio;
mod tools;

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CustomRequest, CustomResult, ErrorCode,
    Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
    Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};

pub use reply::{META_RECEIPT_ID, to_mcp};
pub use tools::{META_SPEC_HASH, META_VERSION, definitions};

use crate::pipeline::{CallMeta, CallRequest, Identity, Origin, Pipeline};

/// Where a session's caller identity comes from.
#[derive(Clone, Debug)]
pub enum Caller {
    /// Fixed for the whole session by the operator (stdio `--principal`).
    Fixed(Identity),
    /// Per request, from the [`Identity`] the HTTP authentication layer put
    /// into the request's extensions. A request without one is refused:
    /// fail closed if the layer is ever missing.
    PerRequest,
}

/// One MCP session's view of tollgate.
#[derive(Clone)]
pub struct TollgateServer {
    pipeline: Arc<Pipeline>,
    tools: Arc<Vec<Tool>>,
    caller: Caller,
    origin: Origin,
    /// Shared by the session's clones; counts the session while any is alive.
    _session: Option<Arc<SessionCount>>,
}

/// Keeps the active-sessions gauge honest: +1 when created, -1 when the
/// session's last handler clone is dropped.
struct SessionCount;

impl SessionCount {
    fn open() -> Arc<SessionCount> {
        crate::metrics::session_opened();
        Arc::new(SessionCount)
    }
}

impl Drop for SessionCount {
    fn drop(&mut self) {
        crate::metrics::session_closed();
    }
}

impl TollgateServer {
    /// `tools` is built once with [`definitions`] and shared by all sessions.
    pub fn new(
        pipeline: Arc<Pipeline>,
        tools: Arc<Vec<Tool>>,
        caller: Caller,
        origin: Origin,
    ) -> TollgateServer {
        TollgateServer {
            pipeline,
            tools,
            caller,
            origin,
            _session: None,
        }
    }

    /// Count this handler (and its clones) as one open session in metrics.
    pub fn counted(mut self) -> TollgateServer {
        self._session = Some(SessionCount::open());
        self
    }

    /// The identity and origin of one request. A request that carries no
    /// verified identity gets an empty one, which the pipeline's
    /// authenticate stage refuses (and records): the fail-closed path.
    fn who(&self, context: &RequestContext<RoleServer>) -> (Identity, Origin) {
        match &self.caller {
            Caller::Fixed(identity) => (identity.clone(), self.origin.clone()),
            Caller::PerRequest => {
                let parts = context.extensions.get::<axum::http::request::Parts>();
                let identity = parts
                    .and_then(|p| p.extensions.get::<Identity>())
                    .cloned()
                    .unwrap_or_else(|| Identity::local("", "none"));
                let session = parts
                    .and_then(|p| p.headers.get("mcp-session-id"))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let origin = Origin {
                    transport: self.origin.transport.clone(),
                    session: session.or_else(|| self.origin.session.clone()),
                };
                (identity, origin)
            }
        }
    }

    /// Serve MCP over stdin/stdout until the client disconnects.
    pub async fn serve_stdio(self) -> Result<(), std::io::Error> {
        let running = self
            .serve(stdio::transport())
            .await
            .map_err(|e| std::io::Error::other(format!("MCP handshake failed: {e}")))?;
        running
            .waiting()
            .await
            .map_err(|e| std::io::Error::other(format!("MCP session ended abnormally: {e}")))?;
        Ok(())
    }
}

/// For a `tools/call` whose params rmcp could not decode: the tool name
/// they carry (empty if none) and why they are malformed, as receipted and
/// answered with `-32602`. Public so the fuzz targets can drive it.
pub fn malformed_call(params: &serde_json::Value) -> (&str, String) {
    let name = params
        .get("name")
        .and_then(|n| n.as_str())
        .unwrap_or_default();
    let why = if !params.is_object() {
        "`params` must be an object with `name` and `arguments`".to_string()
    } else if params.get("name").and_then(|n| n.as_str()).is_none() {
        "`params.name` must be a string naming the tool".to_string()
    } else if params
        .get("arguments")
        .is_some_and(|a| !a.is_object() && !a.is_null())
    {
        "`params.arguments` must be a JSON object".to_string()
    } else {
        "the params do not match the tools/call schema".to_string()
    };
    (name, why)
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

    /// Accepted so clients that set a level don't see an error; tollgate's
    /// own logs go to stderr and are not forwarded to clients. (MCP logging
    /// is deprecated by SEP-2577; older clients still send this.)
    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        tracing::debug!(level = ?request.level, "client set its log level");
        Ok(())
    }

    /// Methods rmcp does not know, and known ones whose params it could not
    /// decode. A `tools/call` of the latter kind (no `name`, `arguments` not
    /// an object) is still an attempted call, so it is receipted and answered
    /// with "invalid params"; anything else is "method not found".
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        if request.method != "tools/call" {
            return Err(ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                request.method,
                None,
            ));
        }
        let params = request.params.unwrap_or(serde_json::Value::Null);
        let (name, why) = malformed_call(&params);
        let (identity, origin) = self.who(&context);
        let reply = self
            .pipeline
            .malformed(&identity, origin, name, why.clone())
            .await;
        Err(ErrorData::invalid_params(
            format!("malformed tools/call: {why}"),
            Some(serde_json::json!({ META_RECEIPT_ID: reply.receipt_id })),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // rmcp moves the request's `_meta` into the context (the params'
        // own `meta` field arrives empty); read both to be safe.
        let meta = match request.meta.as_ref().filter(|m| !m.0.0.is_empty()) {
            Some(m) => CallMeta::from_meta(&m.0.0),
            None => CallMeta::from_meta(&context.meta.0.0),
        };
        let req = CallRequest {
            tool: request.name.to_string(),
            arguments: request.arguments,
            meta,
        };
        let (identity, origin) = self.who(&context);
        #[cfg(feature = "bench-decompose")]
        if crate::bench_stage::cut() == crate::bench_stage::Cut::Pipeline {
            return Ok(crate::bench_stage::echo(req.arguments.as_ref()).into());
        }
        // The call runs in its own task: if rmcp drops this future (client
        // gone, session closed, server stopping), the tool and its receipt
        // still finish together; a call is never cut off between the two.
        let pipeline = self.pipeline.clone();
        let reply = tokio::spawn(async move { pipeline.call(&identity, origin, req).await })
            .await
            .map_err(|e| ErrorData::internal_error(format!("call task failed: {e}"), None))?;
        to_mcp(reply).map(Into::into)
    }
}
