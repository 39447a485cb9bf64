//! The Helm chart: what it renders (`render`), what it refuses or survives among hostile but
//! valid values (`values`), and the contract between the rendered containers and the binaries
//! (`contract`). Needs helm (`$HELM` or scripts/chart-tools.sh).

#[path = "../support/mod.rs"]
mod support;

mod alerts;
mod auth;
mod cluster;
mod contract;
mod dashboard;
mod release;
mod render;
mod tls_acl;
mod upgrade;
mod values;
mod workflows;
