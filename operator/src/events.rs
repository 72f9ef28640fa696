//! Events the operator records.

/// An Event about `object` from the operator; failing to record one never fails the work.
pub async fn publish_event(
    client: &kube::Client,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    type_: kube::runtime::events::EventType,
    reason: &str,
    note: &str,
    action: &str,
) {
    tollgate_runtime::events::publish(client, "tollgate-operator", object, type_, reason, note, action).await;
}
