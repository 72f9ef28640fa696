//! The AI first reader (`ApprovalWorkflow.spec.approvers.ai`): once per held call, a model read
//! through the Tollgate gateway under the reader agent's own key (so its allowed models, budgets,
//! ledger and audit apply), off the phase machine's path. A clear, confident answer becomes a
//! decision `ai:<workflow>` (`via: ai`) appended through the status subresource, which admission
//! lets only the operator write; anything else is an abstention. Either way the request's
//! `AIReviewed` condition and an Event say what the reader did, and the people decide the rest.
//! What is asked and what the answer means is `tollgate_core::approval::ai_review`.

use crate::controllers::condition;
use bytes::Bytes;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tollgate_api::{AiReader as ReaderSpec, ApprovalRequest, ApprovalWorkflow, ManagedAgent, Via};
use tollgate_core::approval::ai_review::{self, ReaderAnswer};
use tollgate_mcp_client::transport::{self, HttpClient};

const TIMEOUT: Duration = Duration::from_secs(60);
pub const CONDITION: &str = "AIReviewed";

pub struct AiReader {
    client: kube::Client,
    http: HttpClient,
    /// The gateway the reader's model calls go through, and its CA when it serves TLS.
    serving: Arc<crate::serving::ServingGateway>,
    gateway_ca: Arc<crate::gateway_ca::GatewayCa>,
    /// Requests being read now.
    reading: Mutex<HashSet<String>>,
}

impl AiReader {
    pub fn new(client: kube::Client, serving: Arc<crate::serving::ServingGateway>, gateway_ca: Arc<crate::gateway_ca::GatewayCa>) -> Arc<AiReader> {
        let roots = Arc::new(transport::platform_roots());
        Arc::new(AiReader { client, http: transport::client(roots), serving, gateway_ca, reading: Mutex::default() })
    }

    /// Has `request` read, if its workflow has a reader and it has not been read.
    pub fn poke(self: &Arc<Self>, request: &ApprovalRequest, workflow: &ApprovalWorkflow) {
        let Some(reader) = workflow.spec.approvers.ai.clone() else { return };
        let status = request.status.clone().unwrap_or_default();
        let user = ai_review::user(&workflow.name_any());
        let read = status.decisions.iter().any(|d| d.user == user) || status.conditions.iter().any(|c| c.type_ == CONDITION);
        if read || status.phase.unwrap_or_default().is_final() {
            return;
        }
        let key = format!("{}/{}", request.namespace().unwrap_or_default(), request.name_any());
        if !self.reading.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone()) {
            return;
        }
        let (this, request, workflow) = (self.clone(), request.clone(), workflow.name_any());
        tokio::spawn(async move {
            this.read(&request, &workflow, &reader).await;
            this.reading.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        });
    }

    #[tracing::instrument(skip_all, fields(request = %request.name_any(), namespace = request.namespace().unwrap_or_default(), workflow))]
    async fn read(&self, request: &ApprovalRequest, workflow: &str, reader: &ReaderSpec) {
        let ns = request.namespace().unwrap_or_default();
        let outcome = match self.ask(&ns, reader, request).await {
            Ok(o) => o,
            Err(why) => ReaderAnswer::Abstain(why),
        };
        let reference = request.object_ref(&());
        let (ok, reason, message) = match &outcome {
            ReaderAnswer::Decide(reading) => {
                let verdict = ai_review::decision_reason(reading);
                match self.record(&ns, &request.name_any(), workflow, reading).await {
                    Ok(()) => (true, "Decided", format!("{:?}: {verdict}", reading.verdict).to_lowercase()),
                    Err(why) => (false, "NotRecorded", format!("the reader's decision could not be recorded: {why}")),
                }
            }
            ReaderAnswer::Abstain(why) => (false, "Abstained", format!("left to the people: {why}")),
        };
        tracing::info!(reason, message, "AI first reader");
        let kind = if ok || reason == "Abstained" { EventType::Normal } else { EventType::Warning };
        crate::events::publish_event(&self.client, &reference, kind, &format!("AI{reason}"), &message, "Review").await;
        self.condition(&ns, &request.name_any(), ok, reason, &message).await;
    }

    /// The model's reading of the call, through the gateway under the reader agent's key.
    async fn ask(&self, ns: &str, reader: &ReaderSpec, request: &ApprovalRequest) -> Result<ReaderAnswer, String> {
        let target = self.serving.target();
        let gateway = target.url.as_deref().ok_or("the operator knows no gateway to call the model through (TOLLGATE_GATEWAY_URL is not set)")?;
        let agent = Api::<ManagedAgent>::namespaced(self.client.clone(), ns)
            .get_opt(&reader.agent)
            .await
            .map_err(|e| format!("reading ManagedAgent {}: {e}", reader.agent))?
            .ok_or_else(|| format!("the reader's ManagedAgent {ns}/{} does not exist", reader.agent))?;
        let secret =
            agent.status.and_then(|s| s.credentials).map(|c| c.secret_name).ok_or_else(|| format!("ManagedAgent {} has no gateway key yet", reader.agent))?;
        let key = Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(&secret)
            .await
            .map_err(|e| format!("reading Secret {secret}: {e}"))?
            .and_then(|s| s.data)
            .and_then(|d| d.get(tollgate_core::model::keys::SECRET_KEY).map(|b| String::from_utf8_lossy(&b.0).trim().to_owned()))
            .ok_or_else(|| format!("Secret {ns}/{secret} holds no gateway key"))?;
        let url = format!("{}/openai/v1/chat/completions", gateway.trim_end_matches('/'));
        let auth = format!("Bearer {key}");
        let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
        let body = Bytes::from(ai_review::request_body(reader, request).to_string());
        // Its own client when the gateway's CA is what vouches for it: one reading is rare.
        let tls_client = match self.gateway_ca.pem(&self.client, target.ca_secret.as_deref()).await? {
            Some(pem) => Some(transport::client(Arc::new(
                transport::roots_with_bundle(&rustls::RootCertStore::empty(), pem.as_bytes()).map_err(|e| format!("the gateway's CA: {e}"))?,
            ))),
            None => None,
        };
        let http = tls_client.as_ref().unwrap_or(&self.http);
        let (status, answer) = transport::post(http, &url, &headers, body, TIMEOUT).await.map_err(|e| format!("the gateway at {gateway}: {e}"))?;
        Ok(ai_review::read_answer(status, &answer, reader.min_confidence_percent))
    }

    /// Appends the reader's decision; admission checks it is the operator's, once, while pending.
    async fn record(&self, ns: &str, name: &str, workflow: &str, reading: &ai_review::Reading) -> Result<(), String> {
        let api = Api::<ApprovalRequest>::namespaced(self.client.clone(), ns);
        let decision = tollgate_core::approval::decision::record(
            &ai_review::user(workflow),
            reading.verdict,
            Some(ai_review::decision_reason(reading)),
            Via::Ai,
            jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_else(|_| jiff::Timestamp::now()),
        );
        for _ in 0..3 {
            let ar = api.get(name).await.map_err(|e| e.to_string())?;
            let ops = tollgate_core::approval::decision::append_decision(&ar, &decision)
                .and_then(serde_json::from_value::<json_patch::Patch>)
                .map_err(|e| e.to_string())?;
            match api.patch_status(name, &crate::ssa::write_params(), &Patch::Json::<()>(ops)).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if tollgate_core::approval::decision::is_stale_write(s.code, &s.message) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("the request kept changing".into())
    }

    /// Sets `AIReviewed` on a fresh read, guarded by its resourceVersion: the phase machine
    /// writes the other conditions.
    async fn condition(&self, ns: &str, name: &str, ok: bool, reason: &str, message: &str) {
        let api = Api::<ApprovalRequest>::namespaced(self.client.clone(), ns);
        for _ in 0..5 {
            let Ok(ar) = api.get(name).await else { return };
            let mut conditions = ar.status.clone().map(|s| s.conditions).unwrap_or_default();
            conditions.retain(|c| c.type_ != CONDITION);
            conditions.push(condition(CONDITION, ok, reason, message, ar.meta().generation, jiff::Timestamp::now()));
            let patch = serde_json::json!({"metadata": {"resourceVersion": ar.resource_version()}, "status": {"conditions": conditions}});
            match api.patch_status(name, &crate::ssa::write_params(), &Patch::Merge(&patch)).await {
                Ok(_) => return,
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "could not record the AI first reader's outcome");
                    return;
                }
            }
        }
    }
}
