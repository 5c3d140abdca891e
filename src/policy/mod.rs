//! Who may call what, with which arguments: Cedar policies.
//!
//! One decision path for every call. Policies come from `policies/*.cedar`
//! and from the spec `allow:` lists (turned into permits, see
//! [`source::generated`]); Cedar decides with deny by default and forbid over
//! permit. The set is checked at load against a schema derived from the tool
//! specs ([`schema`]), so a policy that names an argument a tool does not
//! have is a start-up error with its file and line, not a silent deny.
//!
//! Two annotations mean something to tollgate:
//!
//! - `@id("name")`: the policy's id in receipts and denials. Without it the
//!   id is `FILE:LINE`.
//! - `@approval("ROLE")` on a permit: the call this permit allows does not
//!   run until a holder of ROLE approves it. A call that some permit without
//!   `@approval` also allows runs directly.
//!
//! `@message("...")` on a forbid is shown to a denied client. Nothing else
//! of a policy's text ever reaches a client.

mod context;
mod memo;
pub mod schema;
mod schema_build;
pub mod source;

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Decision, Effect, Entities, Entity, EntityUid, PolicyId, PolicySet, Request,
    RestrictedExpression, ValidationMode, Validator,
};
use cedar_policy::{SlotId, Template};
use chrono::{DateTime, Utc};
use miette::Diagnostic;
use serde_json::{Map, Value};

use crate::catalog::CompiledTool;
use crate::principals::Principals;
use context::{Kind, uid};
pub use schema_build::SchemaBuild;
pub use source::Source;

/// One problem with the policies, located as precisely as Cedar allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyIssue {
    /// The file (relative to the policies directory) or the generated set.
    pub file: String,
    pub line: Option<usize>,
    /// The policy's id, when the problem belongs to one policy.
    pub policy: Option<String>,
    pub message: String,
}

impl std::fmt::Display for PolicyIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(id) = &self.policy {
            write!(f, ": policy `{id}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What the policies say about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run it. `policies` are the permits that allowed it.
    Allow { policies: Vec<String> },
    /// Only `@approval` permits allow it: a holder of `role` must approve.
    Approval { role: String, policies: Vec<String> },
    /// Refused. `policies` are the forbids that applied (empty when nothing
    /// permitted the call); `message` is safe to show the client.
    Deny {
        policies: Vec<String>,
        message: String,
    },
}

/// The facts of one call that policies may consult.
#[derive(Debug, Clone)]
pub struct CallFacts<'a> {
    pub principal: &'a str,
    pub roles: &'a [String],
    pub tool: &'a str,
    pub args: &'a Map<String, Value>,
    pub transport: &'a str,
    /// "stdio", "cli", "api_key" or "jwt".
    pub auth_method: &'a str,
    pub now: DateTime<Utc>,
}

/// What tollgate knows about a policy besides its text.
#[derive(Debug, Clone)]
struct PolicyMeta {
    effect: Effect,
    approval: Option<String>,
    message: Option<String>,
}

/// Per-tool pieces prepared once at load.
struct ToolFacts {
    action: EntityUid,
    entity: Entity,
    args_type: Value,
    /// No policy that could apply to this tool reads `context`, so its
    /// decisions depend only on (principal, roles) and are remembered
    /// (see [`memo`]).
    memoize: bool,
}

/// The loaded, validated policy set. Shared by all calls.
pub struct PolicyEngine {
    set: PolicySet,
    /// Holds the schema too: calls' requests are checked against
    /// `validator.schema()`, so the schema is built once and never copied.
    validator: Arc<Validator>,
    authorizer: Authorizer,
    hash: String,
    sources: Vec<Source>,
    tools: HashMap<String, ToolFacts>,
    meta: HashMap<String, PolicyMeta>,
    memo: memo::Memo,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("hash", &self.hash)
            .field("policies", &self.meta.len())
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Read `dir`, add the policies generated from the tools' `allow:`
    /// lists, and validate everything against the tools' schema. Every
    /// problem is returned at once.
    /// The tools may be shared (`&Arc<CompiledTool>`, as in a catalog) or not.
    pub fn load<'a, T: Borrow<CompiledTool> + 'a>(
        dir: &Path,
        tools: impl IntoIterator<Item = &'a T>,
        principals: Option<&Principals>,
    ) -> Result<PolicyEngine, Vec<PolicyIssue>> {
        let tools: Vec<&CompiledTool> = tools.into_iter().map(Borrow::borrow).collect();
        let sources = Self::read_sources(dir, &tools)?;
        Self::from_sources_with(sources, tools, principals, None)
    }

    /// The policy files of `dir`, then the policies generated from the
    /// tools' `allow:` lists.
    fn read_sources(dir: &Path, tools: &[&CompiledTool]) -> Result<Vec<Source>, Vec<PolicyIssue>> {
        let mut sources = source::read_dir(dir).map_err(|m| {
            vec![PolicyIssue {
                file: dir.display().to_string(),
                line: None,
                policy: None,
                message: m,
            }]
        })?;
        sources.push(source::generated(
            tools
                .iter()
                .filter(|t| !t.spec.allow.is_empty())
                .map(|t| (t.spec.name.as_str(), t.spec.allow.as_slice())),
        ));
        Ok(sources)
    }

    /// Build from already read sources (the last one usually the generated set).
    pub fn from_sources<'a, T: Borrow<CompiledTool> + 'a>(
        sources: Vec<Source>,
        tools: impl IntoIterator<Item = &'a T>,
        principals: Option<&Principals>,
    ) -> Result<PolicyEngine, Vec<PolicyIssue>> {
        let tools: Vec<&CompiledTool> = tools.into_iter().map(Borrow::borrow).collect();
        Self::from_sources_with(sources, tools, principals, None)
    }

    /// [`PolicyEngine::load`] with a schema whose build started earlier
    /// (see [`SchemaBuild`]). If the tools' argument types are not the ones
    /// it was started with, the schema is built again here.
    pub fn load_with<'a, T: Borrow<CompiledTool> + 'a>(
        dir: &Path,
        tools: impl IntoIterator<Item = &'a T>,
        principals: Option<&Principals>,
        schema: &SchemaBuild,
    ) -> Result<PolicyEngine, Vec<PolicyIssue>> {
        let tools: Vec<&CompiledTool> = tools.into_iter().map(Borrow::borrow).collect();
        let sources = Self::read_sources(dir, &tools)?;
        Self::from_sources_with(sources, tools, principals, Some(schema))
    }

    fn from_sources_with(
        sources: Vec<Source>,
        tools: Vec<&CompiledTool>,
        principals: Option<&Principals>,
        started: Option<&SchemaBuild>,
    ) -> Result<PolicyEngine, Vec<PolicyIssue>> {
        // The Cedar schema is the slowest part of loading (for 1,000 tools,
        // more than everything else here together) and needs only the
        // tools' argument types: it is built on another core (from earlier
        // on, when the caller started it) while this one reads the policies
        // and describes the tools. A build started for other argument
        // types (a pinned tool's older version) is not used.
        let arg_types = schema_build::arg_types(tools.iter().copied());
        let own;
        let schema = match started {
            Some(s) if s.is_for(&arg_types) => s,
            _ => {
                own = SchemaBuild::spawn(arg_types.clone());
                &own
            }
        };
        let mut issues = Vec::new();
        let issue = |file: &str, line, policy: Option<&str>, message: String| PolicyIssue {
            file: file.to_owned(),
            line,
            policy: policy.map(str::to_owned),
            message,
        };

        // Parse each source on its own so spans point into that file.
        let mut set = PolicySet::new();
        let mut meta = HashMap::new();
        let mut located: HashMap<String, (usize, String)> = HashMap::new();
        for (si, src) in sources.iter().enumerate() {
            if src.name == source::GENERATED
                && let Some(links) = source::allow_links(&src.text)
            {
                // The allow lists: links of one template, not parsed one by
                // one (see `source::generated` for why).
                for link in links {
                    let line = Some(link.line);
                    if let Some((other, _)) = located.get(&link.id) {
                        issues.push(issue(
                            &src.name,
                            line,
                            Some(&link.id),
                            format!(
                                "the id is also used in {}; give each policy its own @id",
                                sources[*other].name
                            ),
                        ));
                        continue;
                    }
                    if let Err(e) = add_allow_link(&mut set, &link) {
                        issues.push(issue(&src.name, line, Some(&link.id), e));
                        continue;
                    }
                    meta.insert(
                        link.id.clone(),
                        PolicyMeta {
                            effect: Effect::Permit,
                            approval: None,
                            message: None,
                        },
                    );
                    located.insert(link.id, (si, link.line.to_string()));
                }
                continue;
            }
            let parsed = match PolicySet::from_str(&src.text) {
                Ok(p) => p,
                Err(errs) => {
                    for e in errs.iter() {
                        let line = first_offset(e).map(|o| source::line_of(&src.text, o));
                        issues.push(issue(&src.name, line, None, e.to_string()));
                    }
                    continue;
                }
            };
            let starts = source::statement_starts(&src.text);
            for (n, policy) in parsed.policies().enumerate() {
                let line = starts.get(n).map(|&o| source::line_of(&src.text, o));
                let id = match (policy.annotation("id"), line) {
                    (Some(id), _) => id.to_owned(),
                    (None, Some(line)) => format!("{}:{line}", src.name),
                    (None, None) => format!("{}#{}", src.name, n + 1),
                };
                if let Some((other, _)) = located.get(&id) {
                    issues.push(issue(
                        &src.name,
                        line,
                        Some(&id),
                        format!(
                            "the id is also used in {}; give each policy its own @id",
                            sources[*other].name
                        ),
                    ));
                    continue;
                }
                let approval = policy.annotation("approval").map(str::to_owned);
                if let Some(role) = &approval {
                    if policy.effect() == Effect::Forbid {
                        issues.push(issue(
                            &src.name,
                            line,
                            Some(&id),
                            "@approval only makes sense on a permit; a forbid is never approved"
                                .into(),
                        ));
                    } else if let Some(p) = principals
                        && !p.has_role(role)
                    {
                        issues.push(issue(&src.name, line, Some(&id), format!("@approval(\"{role}\") names a role that no principal file declares, so nobody could approve; declare it in the principals file")));
                    }
                }
                meta.insert(
                    id.clone(),
                    PolicyMeta {
                        effect: policy.effect(),
                        approval,
                        message: policy.annotation("message").map(str::to_owned),
                    },
                );
                located.insert(
                    id.clone(),
                    (si, line.map(|l| l.to_string()).unwrap_or_default()),
                );
                let renamed = policy.new_id(PolicyId::new(&id));
                if let Err(e) = set.add(renamed) {
                    issues.push(issue(&src.name, line, Some(&id), e.to_string()));
                }
            }
        }

        let mut facts = HashMap::new();
        for (tool, (_, args_type)) in tools.iter().zip(arg_types) {
            match tool_facts(tool, args_type) {
                Ok(f) => {
                    facts.insert(tool.spec.name.clone(), f);
                }
                Err(m) => issues.push(issue(&tool.spec.name, None, None, m)),
            }
        }
        let validator = match schema.validator() {
            Ok(s) => s,
            Err(e) => {
                issues.push(issue("(schema derived from the tool specs)", None, None, e));
                return Err(issues);
            }
        };
        let validated = validator.validate(&set, ValidationMode::Strict);
        for e in validated.validation_errors() {
            let id = e.policy_id().to_string();
            let (file, text) = located
                .get(&id)
                .map(|(si, _)| (sources[*si].name.as_str(), sources[*si].text.as_str()))
                .unwrap_or(("(unknown)", ""));
            let line = first_offset(e).map(|o| source::line_of(text, o));
            issues.push(issue(file, line, Some(&id), validation_message(e)));
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        for w in validated.validation_warnings() {
            tracing::warn!(policy = %w.policy_id(), "policy warning: {w}");
        }
        mark_memoizable(&set, &mut facts);
        Ok(PolicyEngine {
            hash: source::hash(&sources),
            set,
            validator,
            authorizer: Authorizer::new(),
            sources,
            tools: facts,
            meta,
            memo: memo::Memo::default(),
        })
    }

    /// SHA-256 of the policy set's sources (see [`source::hash`]).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The sources, as stored with the hash.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// How many policies the set holds (generated ones included).
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Decide one call. Fails closed: anything that keeps Cedar from judging
    /// the call (an argument it cannot represent) is a deny.
    pub fn decide(&self, call: &CallFacts<'_>) -> Verdict {
        match self.evaluate(call) {
            Ok(v) => v,
            Err(why) => Verdict::Deny {
                policies: Vec::new(),
                message: why,
            },
        }
    }

    fn evaluate(&self, call: &CallFacts<'_>) -> Result<Verdict, String> {
        let tool = self
            .tools
            .get(call.tool)
            .ok_or_else(|| format!("tool `{}` is not known to the policy engine", call.tool))?;
        if !tool.memoize {
            return self.judge(tool, call).map(|(verdict, _)| verdict);
        }
        // Arguments no policy reads must still be representable: a call is
        // refused rather than judged on part of its facts, memo or not.
        schema::cedar_args(&tool.args_type, call.args)?;
        let key = memo::key(call.tool, call.principal, call.roles);
        if let Some(verdict) = self.memo.get(&key) {
            return Ok(verdict);
        }
        let (verdict, clean) = self.judge(tool, call)?;
        if clean {
            self.memo.put(key, &verdict);
        }
        Ok(verdict)
    }

    /// Ask Cedar. The flag says the evaluation reported no errors (only
    /// such verdicts are remembered, so every call logs its warnings).
    fn judge(&self, tool: &ToolFacts, call: &CallFacts<'_>) -> Result<(Verdict, bool), String> {
        let principal = uid(Kind::Principal, call.principal);
        let roles: HashSet<EntityUid> = call.roles.iter().map(|r| uid(Kind::Role, r)).collect();
        let mut entities: Vec<Entity> = roles
            .iter()
            .map(|r| Entity::new_no_attrs(r.clone(), HashSet::new()))
            .collect();
        entities.push(Entity::new_no_attrs(principal.clone(), roles));
        entities.push(tool.entity.clone());
        let entities = Entities::from_entities(entities, None)
            .map_err(|e| format!("cannot build the policy request: {e}"))?;
        let context = context::build(&context::Facts {
            args_type: &tool.args_type,
            args: call.args,
            transport: call.transport,
            auth_method: call.auth_method,
            now: call.now,
        })?;
        let request = Request::new(
            principal,
            tool.action.clone(),
            tool.entity.uid(),
            context,
            Some(self.validator.schema()),
        )
        .map_err(|e| format!("cannot build the policy request: {e}"))?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.set, &entities);
        let clean = response.diagnostics().errors().next().is_none();
        for err in response.diagnostics().errors() {
            // Cedar skips a policy that errors; say which, without values.
            let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = err;
            tracing::warn!(policy = %e.policy_id(), "policy could not be evaluated for this call and was skipped");
        }
        let mut reasons: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        reasons.sort();
        let verdict = match response.decision() {
            Decision::Allow => {
                let direct: Vec<String> = reasons
                    .iter()
                    .filter(|id| self.approval_of(id).is_none())
                    .cloned()
                    .collect();
                if direct.is_empty() {
                    let role = reasons
                        .iter()
                        .find_map(|id| self.approval_of(id))
                        .unwrap_or_default()
                        .to_owned();
                    Verdict::Approval {
                        role,
                        policies: reasons,
                    }
                } else {
                    Verdict::Allow { policies: direct }
                }
            }
            Decision::Deny => {
                let forbids: Vec<String> = reasons
                    .into_iter()
                    .filter(|id| {
                        self.meta
                            .get(id)
                            .is_some_and(|m| m.effect == Effect::Forbid)
                    })
                    .collect();
                let message = match forbids.first() {
                    None => format!(
                        "no policy permits principal `{}` to call `{}` with these arguments",
                        call.principal, call.tool
                    ),
                    Some(id) => {
                        let mut m = format!("policy `{id}` forbids this call");
                        if let Some(text) = self.meta.get(id).and_then(|m| m.message.as_deref()) {
                            m.push_str(": ");
                            m.push_str(text);
                        }
                        m
                    }
                };
                Verdict::Deny {
                    policies: forbids,
                    message,
                }
            }
        };
        Ok((verdict, clean))
    }

    fn approval_of(&self, id: &str) -> Option<&str> {
        self.meta.get(id)?.approval.as_deref()
    }

    /// Ids and effects of every policy, sorted (for `tollgate check`).
    pub fn summary(&self) -> BTreeMap<String, String> {
        self.meta
            .iter()
            .map(|(id, m)| {
                let what = match (&m.effect, &m.approval) {
                    (Effect::Forbid, _) => "forbid".to_owned(),
                    (Effect::Permit, None) => "permit".to_owned(),
                    (Effect::Permit, Some(role)) => format!("permit with approval by {role}"),
                };
                (id.clone(), what)
            })
            .collect()
    }
}

/// Id of the template behind the generated allow-list permits. Not a
/// policy: Cedar names only the links in its reasons.
const ALLOW_TEMPLATE_ID: &str = "allow:(template)";

/// Add one generated permit as a link of [`source::ALLOW_TEMPLATE`],
/// adding the template first when the set does not hold it yet.
fn add_allow_link(set: &mut PolicySet, link: &source::AllowLink) -> Result<(), String> {
    let template_id = PolicyId::new(ALLOW_TEMPLATE_ID);
    if set.template(&template_id).is_none() {
        let template = Template::parse(Some(template_id.clone()), source::ALLOW_TEMPLATE)
            .map_err(|e| format!("cannot build the allow-list template: {e}"))?;
        set.add_template(template).map_err(|e| e.to_string())?;
    }
    let slots = HashMap::from([
        (SlotId::principal(), uid(Kind::Role, &link.role)),
        (SlotId::resource(), uid(Kind::Tool, &link.tool)),
    ]);
    set.link(template_id, PolicyId::new(&link.id), slots)
        .map_err(|e| e.to_string())
}

/// Set [`ToolFacts::memoize`] for each tool no context-reading policy can
/// apply to. Links are judged by their template's text, read once.
fn mark_memoizable(set: &PolicySet, tools: &mut HashMap<String, ToolFacts>) {
    let mut by_template: HashMap<PolicyId, bool> = HashMap::new();
    let readers: Vec<&cedar_policy::Policy> = set
        .policies()
        .filter(|p| match p.template_id() {
            None => memo::reads_context(p.to_json()),
            Some(t) => *by_template.entry(t.clone()).or_insert_with(|| {
                set.template(t)
                    .is_none_or(|t| memo::reads_context(t.to_json()))
            }),
        })
        .collect();
    for facts in tools.values_mut() {
        let resource = facts.entity.uid();
        facts.memoize = !readers
            .iter()
            .any(|p| memo::may_apply(p, &facts.action, &resource));
    }
}

fn tool_facts(tool: &CompiledTool, args_type: Value) -> Result<ToolFacts, String> {
    let name = &tool.spec.name;
    let ann = tool.spec.annotations.clone().unwrap_or_default();
    let tags = tool
        .spec
        .tags
        .iter()
        .map(|t| RestrictedExpression::new_string(t.clone()));
    let attrs = HashMap::from([
        (
            "name".to_owned(),
            RestrictedExpression::new_string(name.clone()),
        ),
        (
            "version".to_owned(),
            RestrictedExpression::new_long(tool.version),
        ),
        (
            "destructive".to_owned(),
            RestrictedExpression::new_bool(ann.destructive_hint.unwrap_or(false)),
        ),
        (
            "read_only".to_owned(),
            RestrictedExpression::new_bool(ann.read_only_hint.unwrap_or(false)),
        ),
        (
            "idempotent".to_owned(),
            RestrictedExpression::new_bool(ann.idempotent_hint.unwrap_or(false)),
        ),
        (
            "open_world".to_owned(),
            RestrictedExpression::new_bool(ann.open_world_hint.unwrap_or(false)),
        ),
        ("tags".to_owned(), RestrictedExpression::new_set(tags)),
    ]);
    let entity = Entity::new(uid(Kind::Tool, name), attrs, HashSet::new())
        .map_err(|e| format!("cannot describe tool `{name}` to the policy engine: {e}"))?;
    Ok(ToolFacts {
        action: uid(Kind::Action, name),
        entity,
        args_type,
        memoize: false,
    })
}

/// Byte offset of a diagnostic's first label, if it has one.
fn first_offset(d: &dyn Diagnostic) -> Option<usize> {
    d.labels()?.next().map(|l| l.offset())
}

/// Cedar's message plus its help text, which often names the fix.
fn validation_message(e: &cedar_policy::ValidationError) -> String {
    match e.help() {
        Some(help) => format!("{e} ({help})"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests;
