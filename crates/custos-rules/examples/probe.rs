//! Reads command lines from standard input and prints the default pack's decision for each.
//!
//! `printf 'rm -rf /\n' | cargo run -p custos-rules --example probe`

fn main() {
    let rs = custos_rules::Ruleset::default_pack();
    let ctx = custos_rules::Context::new("alice", "web1", time::OffsetDateTime::UNIX_EPOCH);
    for line in std::io::stdin().lines().map_while(Result::ok) {
        let d = custos_rules::test_command(&rs, &line, &ctx);
        println!("$ {line}\n{d}");
    }
}
