//! Server-side apply as the operator: the object with its kind, written under one field manager
//! that takes over what it sets.

use kube::api::{Patch, PatchParams};

pub const MANAGER: &str = "tollgate-operator";

pub fn params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// `object` as an apply body (typed objects serialize without `apiVersion` and `kind`).
pub fn body<K: kube::Resource<DynamicType = ()> + serde::Serialize>(object: &K) -> Patch<serde_json::Value> {
    let mut v = serde_json::to_value(object).unwrap_or_default();
    v["apiVersion"] = K::api_version(&()).into();
    v["kind"] = K::kind(&()).into();
    Patch::Apply(v)
}
