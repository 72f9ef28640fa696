//! Connecting as kubectl would: the same kubeconfig, context, namespace and impersonation flags.

use anyhow::{Context as _, Result, anyhow};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::args::Connection;
use super::errors::{self, Doing};

/// A client and the namespace commands act in.
pub struct Session {
    pub client: Client,
    pub namespace: String,
}

/// Loads the kubeconfig (`--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`, else the
/// in-cluster service account), applies `--context`, `--as` and `--as-group`, and picks the
/// namespace (`-n`, else the context's, else `default`).
pub async fn connect(conn: &Connection) -> Result<Session> {
    let options = KubeConfigOptions { context: conn.context.clone(), cluster: None, user: None };
    let mut config = match (&conn.kubeconfig, &conn.context) {
        (Some(path), _) => {
            let fail = |e: &dyn std::error::Error| anyhow!("cannot use the kubeconfig {}: {}", path.display(), errors::causes(e));
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| fail(&e))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| fail(&e))?
        }
        // `from_kubeconfig` reads $KUBECONFIG (all its files, merged) or ~/.kube/config.
        (None, Some(context)) => {
            Config::from_kubeconfig(&options).await.map_err(|e| anyhow!("cannot use the kubeconfig context {context:?}: {}", errors::causes(&e)))?
        }
        (None, None) => Config::infer().await.map_err(|e| anyhow!("no usable kubeconfig (use --kubeconfig or set KUBECONFIG): {}", errors::causes(&e)))?,
    };
    // kube sends these as Impersonate-User / Impersonate-Group headers, as kubectl --as does.
    if let Some(user) = &conn.as_user {
        config.auth_info.impersonate = Some(user.clone());
    }
    if !conn.as_group.is_empty() {
        config.auth_info.impersonate_groups = Some(conn.as_group.clone());
    }
    let namespace = conn.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| anyhow!("cannot build a client for the API server: {}", errors::causes(&e)))?;
    Ok(Session { client, namespace })
}

/// The caller's user name as the API server authenticates them (after impersonation): the
/// `user` a decision must carry for the admission webhook to accept it.
pub async fn whoami(session: &Session) -> Result<String> {
    Ok(whoami_with_groups(session).await?.0)
}

/// The caller's user name and groups, as the API server authenticates them.
pub async fn whoami_with_groups(session: &Session) -> Result<(String, Vec<String>)> {
    let api: Api<SelfSubjectReview> = Api::all(session.client.clone());
    let cx = errors::Context { namespace: &session.namespace, user: None, doing: Doing::WhoAmI };
    let review = api.create(&PostParams::default(), &SelfSubjectReview::default()).await.map_err(|e| anyhow::Error::msg(errors::explain(&e, &cx)))?;
    let info = review.status.and_then(|s| s.user_info).unwrap_or_default();
    let user = info.username.filter(|u| !u.is_empty()).context("the API server did not say who you are (SelfSubjectReview has no username)")?;
    Ok((user, info.groups.unwrap_or_default()))
}
