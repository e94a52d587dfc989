//! Embeds the SQL migrations of `schema/` (V{n}__name.sql) into the store crate, so the
//! binaries carry their schema and `postbus db migrate` needs no files beside it.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema");
    println!("cargo:rerun-if-changed={}", schema.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&schema).expect("schema/ directory next to crates/") {
        let path = entry.expect("readable schema dir").path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        println!("cargo:rerun-if-changed={}", path.display());
        let Some(rest) = name.strip_prefix('V').and_then(|r| r.strip_suffix(".sql")) else {
            continue;
        };
        let (version, title) = rest
            .split_once("__")
            .expect("migration names are V{n}__title.sql");
        let version: i32 = version.parse().expect("migration version is a number");
        found.push((version, title.to_owned(), path.canonicalize().unwrap()));
    }
    found.sort_by_key(|m| m.0);
    for (i, m) in found.iter().enumerate() {
        assert_eq!(
            m.0,
            i as i32 + 1,
            "migrations must be numbered 1, 2, 3... without gaps"
        );
    }
    let mut out = String::from(
        "/// Embedded migrations: (version, title, sql).\npub const MIGRATIONS: &[(i32, &str, &str)] = &[\n",
    );
    for (version, title, path) in &found {
        writeln!(
            out,
            "    ({version}, {title:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("migrations.rs");
    std::fs::write(dest, out).unwrap();
}
