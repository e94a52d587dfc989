//! postbus never fetches a verification key: this crate, and everything it depends on, has
//! no HTTP client, socket or async runtime. Checked on Cargo.lock, so adding one (directly or
//! through a new dependency) fails here rather than quietly enabling `jku`-style key fetching.

use std::collections::{BTreeSet, HashMap};

const NETWORKING: &[&str] = &[
    "reqwest",
    "hyper",
    "h2",
    "http",
    "ureq",
    "isahc",
    "curl",
    "attohttpc",
    "surf",
    "tokio",
    "async-std",
    "mio",
    "socket2",
];

#[test]
fn the_crate_cannot_reach_the_network() {
    let lock = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock");
    let lock: toml::Table = std::fs::read_to_string(lock).unwrap().parse().unwrap();
    // name -> the names of its dependencies (all versions of a name merged: an over-estimate,
    // which only makes the check stricter).
    let mut deps: HashMap<String, BTreeSet<String>> = HashMap::new();
    for p in lock["package"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap().to_owned();
        let entry = deps.entry(name).or_default();
        for d in p
            .get("dependencies")
            .and_then(|d| d.as_array())
            .into_iter()
            .flatten()
        {
            let d = d.as_str().unwrap();
            entry.insert(d.split(' ').next().unwrap().to_owned());
        }
    }
    let mut seen = BTreeSet::new();
    let mut todo = vec!["postbus-auth".to_owned()];
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            todo.extend(deps.get(&name).into_iter().flatten().cloned());
        }
    }
    assert!(seen.contains("jsonwebtoken"), "the walk found {seen:?}");
    let found: Vec<&&str> = NETWORKING.iter().filter(|n| seen.contains(**n)).collect();
    assert!(found.is_empty(), "postbus-auth depends on {found:?}");
}
