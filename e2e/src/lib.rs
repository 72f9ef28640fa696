//! End-to-end harness for Tollgate (DESIGN §4): a real kube-apiserver and etcd on loopback with
//! generated certificates, RBAC on, token-file users, and Tollgate's CRDs applied from `crds/`.

mod balancer;
mod basics;
pub mod browser;
pub mod certs;
mod child;
mod components;
mod control_plane;
pub mod gateway;
pub mod http;
pub mod jaeger;
pub mod kubelet;
mod mcp;
pub mod netns;
pub mod openbao;
pub mod postgres;
mod process;
pub mod proxy;
pub mod raw_mcp;
pub mod requests;
pub mod slack;
mod tollgate;
mod users;

pub use balancer::Balancer;
pub use basics::{TimedOut, random_hex, repo_file, wait_until};
pub use components::{argocd_health, free_ports, helm, iptables, krew, render_chart};
pub use control_plane::ControlPlane;
pub use mcp::{
    AuthEcho, Everything, Hostile, Modern, TasksServer, py_client, py_client_with_args, py_client_with_timeout, py_modern_client, py_modern_client_with,
    tool_text, tools_dir, ts_client,
};
pub use tollgate::{Launch, OPERATOR_USER, Operator, Process, Sidecar, binary, chart_values, plugin_path, plugin_path_with_completion};
pub use users::User;
