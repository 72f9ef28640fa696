//! How the operator writes: under one field manager (`tollgate-operator`), by server-side apply
//! for the objects it owns (taking over what it sets) and by plain patches for status.

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

/// A plain write (a status patch) under the operator's name, so `managedFields` says who wrote it.
pub fn write_params() -> PatchParams {
    PatchParams { field_manager: Some(MANAGER.to_owned()), ..PatchParams::default() }
}
