//! The API server's refusals, in plain words. Whoever runs `kubectl approve` needs to know what
//! to do next, not which Go package produced the error.

/// What the command was doing when the server refused, to phrase the answer.
#[derive(Debug, Clone, Copy)]
pub enum Doing<'a> {
    List { all_namespaces: bool },
    Watch { all_namespaces: bool },
    Read { name: &'a str },
    Decide { name: &'a str },
    WhoAmI,
}

#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub namespace: &'a str,
    /// The caller, when already known (from a SelfSubjectReview).
    pub user: Option<&'a str>,
    pub doing: Doing<'a>,
}

/// What the API server's 404 says when the resource type itself is unknown.
const NO_SUCH_RESOURCE: &str = "the server could not find the requested resource";

/// Strips the wrapping that only says which part of the server refused: an admission webhook or
/// admission policy prefix, and `Kind.group "name" is invalid: ` before field errors.
pub fn clean_message(message: &str) -> String {
    let message = message.trim();
    for marker in ["denied the request: ", "denied request: "] {
        if let Some((_, rest)) = message.split_once(marker) {
            return rest.trim().to_owned();
        }
    }
    if let Some((_, rest)) = message.split_once(" is invalid: ") {
        return rest.trim().to_owned();
    }
    message.to_owned()
}

/// The user named in an RBAC refusal: `... User "bob" cannot patch resource ...`.
fn rbac_user(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once("User \"")?;
    rest.split_once('"').map(|(user, _)| user)
}

pub use tollgate_core::approval::decision::{PATCH_NOT_APPLICABLE, is_stale_write};

/// The plain-words text for an API error `code` with `message`, while doing `cx`.
pub fn explain_status(code: u16, message: &str, cx: &Context<'_>) -> String {
    let ns = cx.namespace;
    match code {
        404 if message.contains(NO_SUCH_RESOURCE) => "the ApprovalRequest API (tollgate.dev/v1alpha1) is not installed on this cluster".into(),
        404 => match cx.doing {
            Doing::Read { name } | Doing::Decide { name } => {
                format!("approval request \"{name}\" not found in namespace \"{ns}\"")
            }
            _ => clean_message(message),
        },
        401 => "the API server did not accept your credentials (401 Unauthorized): check your kubeconfig".into(),
        403 if message.contains("cannot impersonate") => {
            let who = cx.user.or(rbac_user(message)).unwrap_or("unknown");
            format!("you ({who}) may not act as another user (--as): impersonation is not granted to you")
        }
        403 if message.contains(" cannot ") && message.contains("User \"") => {
            let who = cx.user.or(rbac_user(message)).unwrap_or("unknown");
            let (verb, all) = match cx.doing {
                Doing::List { all_namespaces } => ("list", all_namespaces),
                Doing::Watch { all_namespaces } => ("watch", all_namespaces),
                Doing::Read { .. } => ("read", false),
                Doing::Decide { .. } => ("decide", false),
                Doing::WhoAmI => {
                    return format!("you ({who}) may not ask the API server who you are: {}", clean_message(message));
                }
            };
            let scope = if all { "in all namespaces".to_owned() } else { format!("in namespace {ns}") };
            format!("you ({who}) may not {verb} approval requests {scope}: ask for the tollgate-approver role")
        }
        409 | 422 if is_stale_write(code, message) => match cx.doing {
            Doing::Decide { name } => {
                format!("{ns}/{name} kept changing while your decision was being written; run the command again")
            }
            _ => clean_message(message),
        },
        400 | 403 | 422 => clean_message(message),
        429 | 500..=599 => format!("the API server failed ({code}): {}", clean_message(message)),
        _ => clean_message(message),
    }
}

/// Any error from kube, for the user: API refusals through [`explain_status`], the rest (no
/// connection, bad kubeconfig) with its chain of causes.
pub fn explain(err: &kube::Error, cx: &Context<'_>) -> String {
    match err {
        kube::Error::Api(status) => explain_status(status.code, &status.message, cx),
        other => format!("cannot talk to the API server: {}", causes(other)),
    }
}

/// An error and its causes on one line, skipping a cause its parent already quoted (kube's
/// errors often do).
pub fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(doing: Doing<'_>) -> Context<'_> {
        Context { namespace: "tollgate-demo", user: None, doing }
    }

    #[test]
    fn webhook_prefixes_are_stripped() {
        assert_eq!(
            clean_message(r#"admission webhook "approvals.tollgate.dev" denied the request: you (bob) are not an approver of workflow prod-deploy"#),
            "you (bob) are not an approver of workflow prod-deploy"
        );
        assert_eq!(
            clean_message(r#"approvalrequests.tollgate.dev "x" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: not now"#),
            "not now"
        );
        assert_eq!(
            clean_message(r#"ApprovalRequest.tollgate.dev "x" is invalid: status.decisions[1]: Duplicate value: map[string]interface {}{"user":"a"}"#),
            r#"status.decisions[1]: Duplicate value: map[string]interface {}{"user":"a"}"#
        );
        assert_eq!(clean_message("  plain  "), "plain");
    }

    #[test]
    fn webhook_denials_pass_through_cleaned() {
        let msg = r#"admission webhook "approvals.tollgate.dev" denied the request: you (bob) are not an approver of workflow prod-deploy"#;
        assert_eq!(explain_status(403, msg, &cx(Doing::Decide { name: "x" })), "you (bob) are not an approver of workflow prod-deploy");
        assert_eq!(explain_status(400, msg, &cx(Doing::Decide { name: "x" })), "you (bob) are not an approver of workflow prod-deploy");
    }

    #[test]
    fn rbac_refusals_name_the_role_to_ask_for() {
        let msg = r#"approvalrequests.tollgate.dev "x" is forbidden: User "outsider" cannot get resource "approvalrequests" in API group "tollgate.dev" in the namespace "tollgate-demo""#;
        assert_eq!(
            explain_status(403, msg, &cx(Doing::Decide { name: "x" })),
            "you (outsider) may not decide approval requests in namespace tollgate-demo: ask for the tollgate-approver role"
        );
        let known = Context { user: Some("carol"), ..cx(Doing::List { all_namespaces: true }) };
        assert_eq!(explain_status(403, msg, &known), "you (carol) may not list approval requests in all namespaces: ask for the tollgate-approver role");
        let imp = r#"users "approver-b" is forbidden: User "outsider" cannot impersonate resource "users" in API group "" at the cluster scope"#;
        assert_eq!(explain_status(403, imp, &cx(Doing::WhoAmI)), "you (outsider) may not act as another user (--as): impersonation is not granted to you");
    }

    #[test]
    fn not_found_says_what_and_where() {
        let msg = r#"approvalrequests.tollgate.dev "nope" not found"#;
        assert_eq!(explain_status(404, msg, &cx(Doing::Read { name: "nope" })), r#"approval request "nope" not found in namespace "tollgate-demo""#);
        assert_eq!(
            explain_status(404, NO_SUCH_RESOURCE, &cx(Doing::List { all_namespaces: false })),
            "the ApprovalRequest API (tollgate.dev/v1alpha1) is not installed on this cluster"
        );
    }

    #[derive(Debug)]
    struct Wrapper(std::io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "failed to read /k: {}", self.0)
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn causes_are_not_repeated() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        assert_eq!(causes(&Wrapper(io())), "failed to read /k: no such file");
        let outer = anyhow::Error::new(io()).context("loading");
        let outer: &dyn std::error::Error = outer.as_ref();
        assert_eq!(causes(outer), "loading: no such file");
    }

    #[test]
    fn conflicts_and_failed_tests_are_stale_writes() {
        assert!(is_stale_write(409, "Operation cannot be fulfilled"));
        assert!(is_stale_write(422, PATCH_NOT_APPLICABLE));
        assert!(!is_stale_write(422, "status.decisions[1]: Duplicate value"));
        assert_eq!(
            explain_status(409, "Operation cannot be fulfilled", &cx(Doing::Decide { name: "x" })),
            "tollgate-demo/x kept changing while your decision was being written; run the command again"
        );
        assert_eq!(
            explain_status(422, PATCH_NOT_APPLICABLE, &cx(Doing::Decide { name: "x" })),
            "tollgate-demo/x kept changing while your decision was being written; run the command again"
        );
    }
}
