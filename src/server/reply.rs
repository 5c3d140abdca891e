//! Turning a pipeline reply into what MCP sends: the one place where
//! tollgate's outcomes meet MCP's two error channels.
//!
//! A refusal the model can act on (denied, limited, invalid, tool failed) is a
//! normal result with `isError: true`, because clients show those to the
//! model. An unknown tool is a JSON-RPC "invalid params" error, as the MCP
//! specification prescribes. Both carry the receipt id.

use rmcp::ErrorData;
use rmcp::model::{CallToolResult, ContentBlock, MetaObject};
use serde_json::json;

use crate::pipeline::{CallError, CallReply};

/// `_meta` key carrying the id of the call's receipt.
pub const META_RECEIPT_ID: &str = "tollgate/receipt_id";

/// Map a pipeline reply to an MCP `tools/call` result or protocol error.
pub fn to_mcp(reply: CallReply) -> Result<CallToolResult, ErrorData> {
    let mut result = match reply.body {
        Ok(output) => {
            let mut r = if output.is_error {
                CallToolResult::error(vec![ContentBlock::text(output.text)])
            } else {
                CallToolResult::success(vec![ContentBlock::text(output.text)])
            };
            // MCP's structuredContent is an object; other JSON stays in the text.
            r.structured_content = output.structured.filter(|v| v.is_object());
            r
        }
        Err(err @ CallError::UnknownTool { .. }) => {
            return Err(ErrorData::invalid_params(
                err.to_string(),
                Some(json!({ META_RECEIPT_ID: reply.receipt_id })),
            ));
        }
        Err(err) => CallToolResult::error(vec![ContentBlock::text(err.to_string())]),
    };
    if let Some(id) = reply.receipt_id {
        let mut meta = MetaObject::new();
        meta.0.insert(META_RECEIPT_ID.into(), json!(id));
        meta.0.extend(reply.meta);
        result.meta = Some(meta);
    }
    Ok(result)
}
