//! One Gateway serves the cluster (docs/design.md §3.4). Every gateway reads every agent and
//! every Budget, and each Gateway keeps a ledger of its own: with two serving, each would count
//! and enforce every budget alone, and an agent calling both (its key works at either Service)
//! would spend each budget twice while they overwrote each other's Budget status. So one of the
//! Gateways that would run replicas serves and the others are refused with its name and run
//! none; more capacity is the one Gateway's `spec.replicas`, sharing one PostgreSQL ledger.
//! The one that serves keeps serving while it asks for replicas: a Gateway scaled up or made
//! later never takes over from it. When it goes, the oldest of the others serves. A Gateway at
//! zero replicas runs no ledger and keeps its objects (its audit key, its Service).

/// The `Ready` reason of a Gateway another serves instead of.
pub const REFUSED: &str = "AnotherGatewayServes";
/// The `Ready` reason of a Gateway being deleted (held by a finalizer, or a foreground deletion
/// of its objects): it runs no replicas while it goes.
pub const DELETING: &str = "Deleting";

/// What the rule reads of a Gateway in the operator's namespace.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub name: &'a str,
    /// Its `metadata.creationTimestamp`; one not yet stored counts as the newest.
    pub created: Option<jiff::Timestamp>,
    /// The replicas it asks for.
    pub replicas: i32,
    /// It has a deletion timestamp: it is going, and another may take over now.
    pub deleting: bool,
    /// Its status says it serves ([`serves_by_status`]).
    pub serving: bool,
}

/// Whether a Gateway's status says it serves: it has a URL, and its `Ready` reason is one of a
/// Gateway running its replicas (`gateway_objects::readiness`). Not one at zero replicas, whose
/// objects could not be written, or whose TLS Secret is unusable: scaled up, such a one would
/// otherwise take over from the one serving. A Gateway made before this rule existed counts
/// too, so of two that both served then, the older goes on.
pub fn serves_by_status(has_url: bool, ready_reason: Option<&str>) -> bool {
    has_url && matches!(ready_reason, Some("Available" | "Degraded" | "NoReplicaReady"))
}

impl Candidate<'_> {
    fn would_serve(&self) -> bool {
        self.replicas > 0 && !self.deleting
    }
}

/// The Gateway that serves the cluster, of those that would run replicas: the one serving now,
/// else the oldest (the first by name among those made in the same second).
pub fn serving<'a>(all: &[Candidate<'a>]) -> Option<&'a str> {
    let rank = |c: &Candidate<'a>| (!c.serving, c.created.is_none(), c.created, c.name);
    all.iter().filter(|c| c.would_serve()).min_by(|a, b| rank(a).cmp(&rank(b))).map(|c| c.name)
}

/// Where the cluster's agents reach the Gateway that serves: what injected pods are given
/// (the gateway's URL, the Secret whose `ca.crt` they trust it by), what the AI first reader
/// calls, and whose account may relay a Slack decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: Option<String>,
    pub ca_secret: Option<String>,
    pub relay_user: String,
}

/// The [`Target`] of the Gateway `name` in `namespace`, as its objects are made
/// (`gateway_objects`).
pub fn target_of(name: &str, namespace: &str, spec: &tollgate_api::GatewaySpec) -> Target {
    use crate::k8s::gateway_objects::{object_name, tls_secret_name, url};
    Target {
        url: Some(url(name, namespace, spec)),
        ca_secret: tls_secret_name(name, spec),
        relay_user: format!("system:serviceaccount:{namespace}:{}", object_name(name)),
    }
}

/// The Gateway of `namespace` a configured URL is the Service of (`<name>-gateway.<namespace>.svc`,
/// any scheme, port, `.cluster.local` or trailing `/`), by the URL's shape alone: the Gateway may
/// be gone (deleted, and another serving).
pub fn gateway_of_url(url: &str, namespace: &str) -> Option<String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit_once(':').map_or(authority, |(host, port)| if port.bytes().all(|b| b.is_ascii_digit()) { host } else { authority });
    let service = [".svc.cluster.local", ".svc", ""].iter().find_map(|suffix| host.strip_suffix(&format!(".{namespace}{suffix}")))?;
    let name = service.strip_suffix("-gateway").filter(|n| !n.is_empty() && !n.contains('.'))?;
    Some(name.to_owned())
}

/// The target agents are given: the one the operator was configured with (the chart's Gateway),
/// unless that is the Gateway `configured_is` of this namespace ([`gateway_of_url`]) and
/// another, `serving`, serves instead (it stepped aside, is refused, or is gone); then the
/// serving one's. A configured gateway that is no Gateway of the namespace (run some other way)
/// is kept, and so is none: the operator does not send agents anywhere it was not told to.
pub fn target<'a>(configured: &'a Target, configured_is: Option<&str>, serving: Option<(&str, &'a Target)>) -> &'a Target {
    match (configured_is, serving) {
        (Some(mine), Some((name, serving))) if mine != name => serving,
        _ => configured,
    }
}

/// The Gateway that serves instead of `me`, when `me` would run replicas and another serves.
pub fn served_instead<'a>(me: &str, all: &[Candidate<'a>]) -> Option<&'a str> {
    let mine = all.iter().find(|c| c.name == me)?;
    if !mine.would_serve() {
        return None;
    }
    serving(all).filter(|other| *other != me)
}

/// Why `me` runs no replicas while `other` serves (its `Ready` condition's message).
pub fn refusal(me: &str, other: &str) -> String {
    format!(
        "Gateway {other} already serves this cluster: {me} would keep a ledger of its own, count every budget again, and let an agent calling both spend each budget twice. \
         It runs no replicas while {other} serves; for more capacity raise {other}'s spec.replicas (with spec.database), or delete {other} or scale it to zero to have the oldest other Gateway serve"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Option<jiff::Timestamp> {
        jiff::Timestamp::from_second(seconds).ok()
    }

    fn gw(name: &str, created: Option<jiff::Timestamp>, replicas: i32) -> Candidate<'_> {
        Candidate { name, created, replicas, deleting: false, serving: false }
    }

    #[test]
    fn the_oldest_gateway_with_replicas_serves_and_the_others_are_told_its_name() {
        let all = [gw("new", at(200), 1), gw("old", at(100), 1), gw("idle", at(50), 0)];
        assert_eq!(serving(&all), Some("old"));
        assert_eq!(served_instead("new", &all), Some("old"));
        assert_eq!(served_instead("old", &all), None);
        // At zero replicas it runs no ledger: never refused, never the one that serves.
        assert_eq!(served_instead("idle", &all), None);
    }

    #[test]
    fn made_in_one_second_the_first_by_name_serves_and_one_not_yet_stored_is_the_newest() {
        let same = [gw("b", at(100), 1), gw("a", at(100), 1)];
        assert_eq!(served_instead("b", &same), Some("a"));
        let unstored = [gw("a", None, 1), gw("z", at(100), 1)];
        assert_eq!(served_instead("a", &unstored), Some("z"));
    }

    #[test]
    fn when_the_serving_gateway_goes_or_scales_to_zero_the_next_serves() {
        let mut all = [gw("old", at(100), 1), gw("new", at(200), 1)];
        assert_eq!(served_instead("new", &all), Some("old"));
        all[0].deleting = true;
        assert_eq!(served_instead("new", &all), None);
        all[0] = gw("old", at(100), 0);
        assert_eq!(served_instead("new", &all), None);
        assert_eq!(serving(&all), Some("new"));
    }

    #[test]
    fn the_one_serving_goes_on_when_an_older_one_is_scaled_up_and_of_two_serving_the_older_does() {
        let serving = Candidate { serving: true, ..gw("new", at(200), 1) };
        let all = [gw("old", at(100), 1), serving];
        assert_eq!(served_instead("old", &all), Some("new"));
        assert_eq!(served_instead("new", &all), None);
        let both = [Candidate { serving: true, ..gw("old", at(100), 1) }, serving];
        assert_eq!(served_instead("new", &both), Some("old"));
    }

    #[test]
    fn a_status_serves_with_a_url_and_the_reason_of_a_gateway_running_its_replicas() {
        assert!(serves_by_status(true, Some("Available")));
        assert!(serves_by_status(true, Some("NoReplicaReady")));
        assert!(serves_by_status(true, Some("Degraded")));
        assert!(!serves_by_status(false, Some("Available")));
        assert!(!serves_by_status(true, None));
        // Every reason of a Gateway running replicas, as the operator writes them, and none else.
        for (desired, ready) in [(2, 2), (2, 1), (2, 0), (0, 0)] {
            let (_, reason, _) = crate::k8s::gateway_objects::readiness(desired, ready);
            assert_eq!(serves_by_status(true, Some(reason)), desired > 0, "{reason}");
        }
        for reason in [REFUSED, DELETING, "ScaledToZero", "OutsideTollgateNamespace", "InvalidName", "TLSSecretUnusable", "ApplyFailed"] {
            assert!(!serves_by_status(true, Some(reason)), "{reason}");
        }
    }

    #[test]
    fn a_gateway_the_rule_does_not_know_is_not_refused() {
        assert_eq!(served_instead("unknown", &[gw("old", at(100), 1)]), None);
    }

    fn spec() -> tollgate_api::GatewaySpec {
        tollgate_api::GatewaySpec {
            replicas: 1,
            image: None,
            database: None,
            slack: None,
            storage: None,
            resources: None,
            tls: Some(tollgate_api::GatewayTls::default()),
        }
    }

    #[test]
    fn agents_are_sent_to_the_serving_gateway_else_to_the_configured_one() {
        let spec = spec();
        let edge = target_of("edge", "tollgate-system", &spec);
        assert_eq!(edge.url.as_deref(), Some("https://edge-gateway.tollgate-system.svc:8080"));
        assert_eq!(edge.ca_secret.as_deref(), Some("edge-gateway-tls"));
        assert_eq!(edge.relay_user, "system:serviceaccount:tollgate-system:edge-gateway");
        let plain = target_of("edge", "tollgate-system", &tollgate_api::GatewaySpec { tls: None, ..spec.clone() });
        assert_eq!((plain.url.as_deref(), plain.ca_secret), (Some("http://edge-gateway.tollgate-system.svc:8080"), None));
        let chart = target_of("tollgate", "tollgate-system", &spec);
        assert_eq!(target(&chart, Some("tollgate"), Some(("edge", &edge))), &edge, "the chart's Gateway stepped aside for edge");
        assert_eq!(target(&chart, Some("tollgate"), Some(("tollgate", &chart))), &chart);
        assert_eq!(target(&chart, Some("tollgate"), None), &chart, "none serves: nowhere better to send them");
        let elsewhere = Target { url: Some("http://127.0.0.1:8080".into()), ca_secret: None, relay_user: "someone".into() };
        assert_eq!(target(&elsewhere, None, Some(("edge", &edge))), &elsewhere, "a gateway run some other way is kept");
        let none = Target { url: None, ca_secret: None, relay_user: "someone".into() };
        assert_eq!(target(&none, None, Some(("edge", &edge))), &none, "nor is one made up");
    }

    #[test]
    fn a_configured_url_names_its_gateway_by_its_shape() {
        let ns = "tollgate-system";
        for url in [
            "https://tollgate-gateway.tollgate-system.svc:8080",
            "http://tollgate-gateway.tollgate-system.svc:8080/",
            "https://tollgate-gateway.tollgate-system.svc.cluster.local:8080",
            "http://tollgate-gateway.tollgate-system",
            "https://tollgate-gateway.tollgate-system.svc/openai",
        ] {
            assert_eq!(gateway_of_url(url, ns).as_deref(), Some("tollgate"), "{url}");
        }
        assert_eq!(gateway_of_url(&target_of("my-edge", ns, &spec()).url.unwrap_or_default(), ns).as_deref(), Some("my-edge"));
        for other in [
            "http://127.0.0.1:8080",
            "https://tollgate-gateway.team-a.svc:8080",
            "https://tollgate.tollgate-system.svc:8080",
            "https://-gateway.tollgate-system.svc",
            "https://a.b-gateway.tollgate-system.svc",
            "ftp://tollgate-gateway.tollgate-system.svc",
            "https://gateway.example.com",
        ] {
            assert_eq!(gateway_of_url(other, ns), None, "{other}");
        }
    }
}
