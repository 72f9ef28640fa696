//! The people of DESIGN §4, as token-file users, and their kubeconfigs.

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;

/// A token-file user of the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum User {
    /// In `system:masters`: bypasses RBAC.
    Admin,
    /// In `tollgate:approvers`.
    ApproverA,
    /// In `tollgate:approvers`.
    ApproverB,
    /// Authenticated, in no group: everything not granted to `system:authenticated` is forbidden.
    Outsider,
}

impl User {
    pub const ALL: [User; 4] = [User::Admin, User::ApproverA, User::ApproverB, User::Outsider];

    /// The Kubernetes user name, as RBAC subjects and audit entries see it.
    pub fn name(self) -> &'static str {
        match self {
            User::Admin => "admin",
            User::ApproverA => "approver-a",
            User::ApproverB => "approver-b",
            User::Outsider => "outsider",
        }
    }

    pub fn groups(self) -> &'static [&'static str] {
        match self {
            User::Admin => &["system:masters"],
            User::ApproverA | User::ApproverB => &["tollgate:approvers"],
            User::Outsider => &[],
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `--token-auth-file` lines: `token,user,uid[,"group1,group2"]`.
pub(crate) fn token_file(tokens: &[String; 4]) -> String {
    User::ALL
        .iter()
        .map(|&user| {
            let token = &tokens[user.index()];
            let name = user.name();
            match user.groups() {
                [] => format!("{token},{name},uid-{name}\n"),
                groups => format!("{token},{name},uid-{name},\"{}\"\n", groups.join(",")),
            }
        })
        .collect()
}

pub(crate) fn write_kubeconfig(path: &Path, name: &str, server: &str, ca_pem: &str, token: &str) -> Result<()> {
    let context = format!("{name}@tollgate-e2e");
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "tollgate-e2e",
            "cluster": {
                "server": server,
                "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            },
        }],
        "users": [{ "name": name, "user": { "token": token } }],
        "contexts": [{
            "name": context,
            "context": { "cluster": "tollgate-e2e", "user": name },
        }],
        "current-context": context,
    });
    let yaml = serde_yaml::to_string(&config).context("serializing a kubeconfig")?;
    std::fs::write(path, yaml).with_context(|| format!("writing {}", path.display()))
}
