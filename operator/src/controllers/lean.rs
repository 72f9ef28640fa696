//! Controllers over lean caches. A controller keeps every object of its kind in memory; what it
//! keeps here is the object without its `managedFields` and kubectl's last-applied copy, which
//! are each about as large as the object and which no reconcile reads (docs/performance.md,
//! "scale"). Other annotations stay: the approvals controller reads its own.

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, Store};
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

/// A lean cache of `api`'s objects, and the watch events that keep it filled.
fn lean_events<K>(api: Api<K>, cfg: watcher::Config) -> (Store<K>, impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    (reader, watcher(api, cfg).backoff(backoff()).modify(slim::<K>).reflect(writer))
}

/// `Controller::new`, over a lean cache.
pub fn controller<K>(api: Api<K>, cfg: watcher::Config) -> Controller<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync + Unpin,
{
    let (reader, events) = lean_events(api, cfg);
    Controller::for_stream(events.applied_objects(), reader).trigger_backoff(backoff())
}

/// As [`controller`], and `changed` is notified whenever the cache is whole and changes (its
/// first listing done, then every edit or deletion): for work over the whole kind, done once
/// per burst of changes, from the same cache.
pub fn controller_notifying<K>(api: Api<K>, cfg: watcher::Config, changed: Arc<Notify>) -> Controller<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync + Unpin,
{
    let (reader, events) = lean_events(api, cfg);
    let events = events.inspect(move |event| {
        if matches!(event, Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_))) {
            changed.notify_one();
        }
    });
    Controller::for_stream(events.applied_objects(), reader).trigger_backoff(backoff())
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

    #[test]
    fn a_failed_watch_tries_again_within_five_seconds() {
        let mut b = WatchBackoff { next: FIRST_RETRY };
        let waits: Vec<u128> = b.by_ref().take(6).map(|d| d.as_millis()).collect();
        assert_eq!(waits, [800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(FIRST_RETRY));
    }
}
