//! `tollgate call`: one governed call from the command line.

use clap::Args;
use serde_json::{Map, Value, json};

use super::app::{App, local_identity};
use super::{EXIT_FAILED, Global};
use tollgate::pipeline::{CallMeta, CallRequest, Origin};

#[derive(Args, Debug)]
pub struct CallArgs {
    /// Tool name.
    pub name: String,
    /// Arguments as a JSON object.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub args: String,
    /// Who is calling; must be listed in the principals file.
    #[arg(long, env = "TOLLGATE_PRINCIPAL", value_name = "NAME")]
    pub principal: Option<String>,
    /// Print the result and receipt id as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Idempotency key (as `_meta.tollgate/idempotency_key`): a repeat with
    /// the same key returns the first result instead of running again.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Follow up on this approval (as `_meta.tollgate/approval_id`).
    #[arg(long, value_name = "ID")]
    pub approval_id: Option<String>,
}

pub async fn run(global: &Global, args: CallArgs) -> anyhow::Result<u8> {
    let settings = global.settings(args.principal)?;
    let arguments: Map<String, Value> =
        match serde_json::from_str::<Value>(&args.args).map_err(|e| {
            anyhow::anyhow!(
                "--args is not valid JSON ({e}); pass an object like '{{\"message\":\"hi\"}}'"
            )
        })? {
            Value::Object(map) => map,
            other => anyhow::bail!(
                "--args must be a JSON object like '{{\"message\":\"hi\"}}', not {}",
                tollgate::canonical::json_type(&other)
            ),
        };
    let identity = local_identity(&settings, "cli")?;
    let app = App::start(&settings).await?;
    let origin = Origin {
        transport: "cli".into(),
        session: None,
    };
    let request = CallRequest {
        tool: args.name,
        arguments: Some(arguments),
        meta: CallMeta {
            idempotency_key: args.idempotency_key,
            approval_id: args.approval_id,
            invalid: None,
        },
    };
    let reply = app.pipeline.call(&identity, origin, request).await;
    app.shutdown().await;
    let (ok, text, structured) = match &reply.body {
        Ok(out) => (!out.is_error, out.text.clone(), out.structured.clone()),
        Err(e) => (false, e.to_string(), None),
    };
    if args.json {
        let out = json!({
            "receipt_id": reply.receipt_id,
            "is_error": !ok,
            "text": text,
            "structured": structured,
            "meta": reply.meta,
        });
        println!("{out}");
    } else {
        if ok {
            println!("{text}");
        } else {
            eprintln!("error: {text}");
        }
        match &reply.receipt_id {
            Some(id) => eprintln!("receipt: {id}"),
            None => eprintln!("receipt: none (could not be committed)"),
        }
        if let Some(decision) = reply.meta.get("tollgate/decision").and_then(Value::as_str)
            && decision != "allowed"
        {
            eprintln!("decision: {decision}");
        }
    }
    Ok(if ok { 0 } else { EXIT_FAILED })
}
