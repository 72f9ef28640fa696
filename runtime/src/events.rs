//! Events from Tollgate's processes: failing to record one never fails the work that caused it.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// An Event about `object`, reported by `controller` (`tollgate-operator`, `tollgate-gateway`).
pub async fn publish(client: &kube::Client, controller: &str, object: &ObjectReference, type_: EventType, reason: &str, note: &str, action: &str) {
    let recorder = Recorder::new(client.clone(), Reporter { controller: controller.into(), instance: None });
    let event = Event { type_, reason: reason.into(), note: Some(note.chars().take(1024).collect()), action: action.into(), secondary: None };
    if let Err(e) = recorder.publish(&event, object).await {
        tracing::warn!(error = %e, reason, "could not publish an event");
    }
}
