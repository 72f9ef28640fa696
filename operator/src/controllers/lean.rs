//! Controllers over lean caches. A controller keeps every object of its kind in memory; what it
//! keeps here is the object without its `managedFields` and kubectl's last-applied copy, which
//! are each about as large as the object and which no reconcile reads (docs/performance.md,
//! "scale"). Other annotations stay: the approvals controller reads its own.

use futures::StreamExt;
use futures::channel::mpsc;
use kube::api::Api;
use kube::api::{ObjectMeta, PartialObjectMeta};
use kube::core::PartialObjectMetaExt;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// kubectl's client-side apply keeps the whole object again in this annotation.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Objects one list request returns while a watch (re)starts. A page of the API server's default
/// 500, with their `managedFields`, is megabytes: decoded at once it is the operator's peak, and
/// the HTTP connection's read buffer, grown to hold it, stays that large for the watch's life.
const LIST_PAGE: u32 = 50;

/// How every watch of the operator lists and watches.
pub fn config() -> watcher::Config {
    watcher::Config::default().page_size(LIST_PAGE)
}

/// A failed watch tries again after 0.8 s, 1.6 s, 3.2 s, then every 5 s; client-go's default
/// (kube's `default_backoff`) grows to 30 s, so an API server back from a restart, or whose
/// authorizer answers 403 until its caches fill, went unseen for half a minute.
pub struct WatchBackoff {
    next: Duration,
}

const FIRST_RETRY: Duration = Duration::from_millis(800);
const LATEST_RETRY: Duration = Duration::from_secs(5);

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(LATEST_RETRY);
        Some(now)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }
}

/// The backoff of every watch of the operator: [`WatchBackoff`], started over after two quiet
/// minutes.
pub fn backoff() -> ResetTimerBackoff<WatchBackoff> {
    ResetTimerBackoff::new(WatchBackoff { next: FIRST_RETRY }, Duration::from_secs(120))
}

/// What is dropped from an object before it is cached.
pub fn slim<K: Resource>(o: &mut K) {
    o.managed_fields_mut().clear();
    o.annotations_mut().remove(LAST_APPLIED);
}

/// Who else hears of a kind's changes besides its controller: a notice that the cache is whole
/// and changed (its first listing done, then every edit or deletion), for work over the whole
/// kind done once per burst; and each object changed, for other controllers to map to theirs
/// (as `Controller::watches` would, without a watch of its own).
pub struct Listeners<K: Resource> {
    changed: Option<Arc<Notify>>,
    followers: Vec<mpsc::UnboundedSender<Result<PartialObjectMeta<K>, watcher::Error>>>,
}

impl<K: Resource> Default for Listeners<K> {
    fn default() -> Self {
        Self { changed: None, followers: Vec::new() }
    }
}

/// The objects of a kind that come, change or go, by name and namespace: a trigger stream for
/// `Controller::watches_stream`, which sees them after the kind's cache does.
pub type Following<K> = mpsc::UnboundedReceiver<Result<PartialObjectMeta<K>, watcher::Error>>;

impl<K: Resource> Listeners<K> {
    #[must_use]
    pub fn with_notice(mut self, changed: Arc<Notify>) -> Self {
        self.changed = Some(changed);
        self
    }

    pub fn follow(&mut self) -> Following<K> {
        let (tx, rx) = mpsc::unbounded();
        self.followers.push(tx);
        rx
    }

    fn hear(&self, event: &watcher::Event<K>) {
        let touched = match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) | watcher::Event::Delete(o) => Some(o),
            watcher::Event::Init | watcher::Event::InitDone => None,
        };
        if let Some(o) = touched {
            // Its name and namespace are what a follower maps to its own objects; not its labels
            // and annotations, once per follower.
            let named = ObjectMeta { name: o.meta().name.clone(), namespace: o.meta().namespace.clone(), ..ObjectMeta::default() };
            for follower in &self.followers {
                // A follower gone (its controller ended) has nothing left to hear.
                let _ = follower.unbounded_send(Ok(named.clone().into_response_partial::<K>()));
            }
        }
        if matches!(event, watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_))
            && let Some(changed) = &self.changed
        {
            changed.notify_one();
        }
    }
}

/// Reconciles one controller runs at once when each only waits on the API server. Unbounded
/// (kube's default), a burst of 2,000 new objects ran hundreds at once, each holding a
/// connection of its own to the API server (one request at a time per HTTP/1.1 connection)
/// with its buffers; the API server, not the operator, sets the pace, so more at once only
/// added connections and memory (docs/performance-history.md, "Operator memory").
const AT_ONCE: u16 = 4;

/// A controller's settings with `at_once` reconciles at a time.
pub fn settings(at_once: u16) -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(at_once)
}

/// `Controller::new`, over a lean cache.
pub fn controller<K>(api: Api<K>, cfg: watcher::Config) -> Controller<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync + Unpin,
{
    controller_heard(api, cfg, reflector::store(), Listeners::default())
}

/// As [`controller`], filling the cache `store` (whose reader others may hold), and telling
/// `listeners` of every change once the cache has it.
pub fn controller_heard<K>(api: Api<K>, cfg: watcher::Config, store: (Store<K>, Writer<K>), listeners: Listeners<K>) -> Controller<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync + Unpin,
{
    let (reader, writer) = store;
    let events = watcher(api, cfg).backoff(backoff()).modify(slim::<K>).reflect(writer).inspect(move |event| {
        if let Ok(event) = event {
            listeners.hear(event);
        }
    });
    Controller::for_stream(events.applied_objects(), reader).trigger_backoff(backoff()).with_config(settings(AT_ONCE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use tollgate_api::ApprovalRequest;

    #[test]
    fn the_cache_keeps_what_reconciles_read_and_drops_the_copies() {
        let mut ar: ApprovalRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "tollgate.dev/v1alpha1", "kind": "ApprovalRequest",
            "metadata": {"name": "r", "namespace": "n", "labels": {"tollgate.dev/agent": "a"},
                "annotations": {LAST_APPLIED: "{...}", "tollgate.dev/cancel": "restarted", "tollgate.dev/traceparent": "00-ab-cd-01"}},
            "spec": {"agent": "a", "serviceAccount": "a", "server": "s", "tool": "t", "argumentsDigest": "d", "workflow": "w", "requestedAt": "2026-12-02T00:00:00Z"}
        }))
        .expect("a request");
        ar.managed_fields_mut().push(ManagedFieldsEntry { manager: Some("kubectl".into()), ..Default::default() });
        slim(&mut ar);
        assert!(ar.managed_fields().is_empty());
        let kept: Vec<&str> = ar.annotations().keys().map(String::as_str).collect();
        assert_eq!(kept, ["tollgate.dev/cancel", "tollgate.dev/traceparent"]);
        assert_eq!(ar.labels().get("tollgate.dev/agent").map(String::as_str), Some("a"));
    }

    #[tokio::test]
    async fn followers_hear_every_object_touched_and_the_notice_comes_once_the_cache_is_whole() {
        use futures::StreamExt;
        let agent = |name: &str| -> tollgate_api::ManagedAgent {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "tollgate.dev/v1alpha1", "kind": "ManagedAgent",
                "metadata": {"name": name, "namespace": "n", "labels": {"team": "a"}},
                "spec": {"selector": {}, "serviceAccountName": "sa"}
            }))
            .expect("an agent")
        };
        let changed = Arc::new(Notify::new());
        let mut listeners = Listeners::default().with_notice(changed.clone());
        let (mut first, mut second) = (listeners.follow(), listeners.follow());
        let heard_notice = || futures::FutureExt::now_or_never(changed.notified()).is_some();

        listeners.hear(&watcher::Event::Init);
        listeners.hear(&watcher::Event::InitApply(agent("listed")));
        assert!(!heard_notice(), "no notice while the first listing is still coming in");
        listeners.hear(&watcher::Event::InitDone);
        assert!(heard_notice());
        listeners.hear(&watcher::Event::Apply(agent("edited")));
        listeners.hear(&watcher::Event::Delete(agent("gone")));
        assert!(heard_notice());
        drop(listeners);

        for follower in [&mut first, &mut second] {
            let heard: Vec<String> = follower.map(|m| m.expect("an object").metadata.name.unwrap_or_default()).collect().await;
            assert_eq!(heard, ["listed", "edited", "gone"]);
        }
    }

    #[test]
    fn a_failed_watch_tries_again_within_five_seconds() {
        let mut b = WatchBackoff { next: FIRST_RETRY };
        let waits: Vec<u128> = b.by_ref().take(6).map(|d| d.as_millis()).collect();
        assert_eq!(waits, [800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(FIRST_RETRY));
    }
}
