//! The page's live view: approval requests (and, when the person may read them, workflows)
//! watched with the person's own credentials into local caches, and a counter that moves on
//! every change for the page's event stream.

use std::sync::Arc;

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tollgate_api::{ApprovalRequest, ApprovalWorkflow};

/// Where the page looks: every namespace, or one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespace(String),
}

impl Scope {
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            Scope::All => Api::all(client.clone()),
            Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Scope::All => "all namespaces".into(),
            Scope::Namespace(ns) => format!("namespace {ns}"),
        }
    }
}

/// The caches and the change counter.
#[derive(Clone)]
pub struct Live {
    pub requests: Store<ApprovalRequest>,
    /// `None` when the person may not list workflows here: the page then cannot tell whose a
    /// request is before the API server says so.
    pub workflows: Option<Store<ApprovalWorkflow>>,
    pub changes: watch::Receiver<u64>,
}

/// Whether listing `api` is allowed (a one-item list): the watcher would retry a refusal
/// forever, so it is asked once, plainly.
pub async fn may_list<K>(api: &Api<K>) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list_metadata(&ListParams::default().limit(1)).await.map(|_| ())
}

fn spawn_reflector<K>(api: Api<K>, bump: Arc<watch::Sender<u64>>) -> Store<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            // Every applied or deleted object, and every relist, is a change for the page.
            if event.is_ok() {
                bump.send_modify(|n| *n += 1);
            }
        }
    });
    store
}

/// Starts watching; returns once the requests' cache holds its first full list.
pub async fn start(client: &Client, scope: &Scope, workflows_readable: bool) -> Live {
    let (tx, changes) = watch::channel(0u64);
    let tx = Arc::new(tx);
    let requests = spawn_reflector(scope.api::<ApprovalRequest>(client), tx.clone());
    let workflows = workflows_readable.then(|| spawn_reflector(scope.api::<ApprovalWorkflow>(client), tx));
    // A watch that cannot start leaves the page empty rather than hanging it.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), requests.wait_until_ready()).await;
    if let Some(w) = &workflows {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), w.wait_until_ready()).await;
    }
    Live { requests, workflows, changes }
}
