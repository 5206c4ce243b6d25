//! The verifier stays small: at run time the crate depends on no development CA (the seal maker
//! is the `maker` feature, which adds no dependency either).

#[test]
fn the_runtime_dependencies_do_not_include_the_development_ca() {
    let manifest = include_str!("../Cargo.toml");
    let section = |name: &str| -> String {
        let start = manifest
            .find(&format!("\n[{name}]"))
            .unwrap_or_else(|| panic!("no [{name}] in Cargo.toml"));
        let rest = &manifest[start + name.len() + 3..];
        rest[..rest.find("\n[").unwrap_or(rest.len())].to_owned()
    };
    let runtime = section("dependencies");
    assert!(runtime.contains("bzt-crypto"), "{runtime}");
    assert!(
        !runtime.contains("bzt-devca"),
        "bzt-seal must not depend on bzt-devca: {runtime}"
    );
    assert!(section("features").contains("maker = []"));
}
