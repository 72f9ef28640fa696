//! `kubectl approve list` and `kubectl approve show NAME`.

use anyhow::Result;
use kube::api::{Api, ListParams};
use tollgate_api::{ApprovalRequest, Phase};

use super::args::{ListArgs, Output, ShowArgs};
use super::client::Session;
use super::errors::{self, Doing};
use super::{format, out};

pub async fn list(session: &Session, args: &ListArgs) -> Result<()> {
    let ns = &session.namespace;
    let api: Api<ApprovalRequest> = if args.all_namespaces { Api::all(session.client.clone()) } else { Api::namespaced(session.client.clone(), ns) };
    let cx = errors::Context { namespace: ns, user: None, doing: Doing::List { all_namespaces: args.all_namespaces } };
    let list = api.list(&ListParams::default()).await.map_err(|e| anyhow::Error::msg(errors::explain(&e, &cx)))?;
    // Phase lives in status, which field selectors cannot reach on custom resources.
    let items: Vec<ApprovalRequest> = list.items.into_iter().filter(|ar| args.all || format::phase(ar) == Phase::Pending).collect();
    match args.output {
        Output::Table | Output::Wide if items.is_empty() => {
            let what = if args.all { "approval requests" } else { "pending approval requests" };
            if args.all_namespaces {
                eprintln!("No {what} found.");
            } else {
                eprintln!("No {what} found in namespace {ns}.");
            }
            Ok(())
        }
        Output::Table | Output::Wide => out::print(&format::list_table(&items, jiff::Timestamp::now(), args.output == Output::Wide, args.all_namespaces)),
        Output::Json => out::println(&serde_json::to_string_pretty(&format::list_document(&items)?)?),
        Output::Yaml => out::print(&serde_yaml::to_string(&format::list_document(&items)?)?),
        Output::Name => {
            let names: Vec<String> = items.iter().map(format::name_line).collect();
            out::print(&names.iter().map(|n| format!("{n}\n")).collect::<String>())
        }
    }
}

pub async fn show(session: &Session, args: &ShowArgs) -> Result<()> {
    let api: Api<ApprovalRequest> = Api::namespaced(session.client.clone(), &session.namespace);
    let cx = errors::Context { namespace: &session.namespace, user: None, doing: Doing::Read { name: &args.name } };
    let ar = api.get(&args.name).await.map_err(|e| anyhow::Error::msg(errors::explain(&e, &cx)))?;
    match args.output {
        Output::Table | Output::Wide => out::print(&format::show(&ar, jiff::Timestamp::now())),
        Output::Json => out::println(&serde_json::to_string_pretty(&ar)?),
        Output::Yaml => out::print(&serde_yaml::to_string(&ar)?),
        Output::Name => out::println(&format::name_line(&ar)),
    }
}

/// Request names with what each asks (`tool by agent`), for completion: pending ones unless
/// `all`; nothing when the cluster cannot be asked.
pub async fn names(conn: &super::args::Connection, all: bool) -> Vec<(String, String)> {
    let Ok(session) = super::client::connect(conn).await else {
        return Vec::new();
    };
    let api: Api<ApprovalRequest> = Api::namespaced(session.client.clone(), &session.namespace);
    let Ok(list) = api.list(&ListParams::default()).await else {
        return Vec::new();
    };
    list.items
        .iter()
        .filter(|ar| all || format::phase(ar) == Phase::Pending)
        .map(|ar| {
            (ar.metadata.name.clone().unwrap_or_default(), format!("{} by {}", format::truncate(&ar.spec.tool, 40), format::truncate(&ar.spec.agent, 40)))
        })
        .collect()
}
