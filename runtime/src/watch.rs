//! Watched objects in a store, with a signal on every change: what the sidecar's snapshot and
//! the gateway's index rebuild from. Every event, deletes and relists included, signals: a
//! deleted object must stop counting as fast as an edited one.

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::fmt::Debug;
use std::hash::Hash;

/// A store of `api`'s objects kept current by a spawned watch; `changed` gets a signal on every
/// event (dropped when one is already waiting: a rebuild reads the whole store anyway).
pub fn reflect<K>(api: Api<K>, config: watcher::Config, changed: &tokio::sync::mpsc::Sender<()>) -> Store<K>
where
    K: kube::Resource + Clone + Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let tx = changed.clone();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff()).for_each(move |_| {
        let _ = tx.try_send(());
        futures::future::ready(())
    });
    tokio::spawn(stream);
    store
}
