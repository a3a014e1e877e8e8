//! CEL targeting (in progress).
#[cfg(test)]
mod probe {
    fn run(src: &str) {
        let env = cel::Env::stdlib();
        let p = env.parser().max_recursion_depth(64);
        match p.parse(src) { Err(e) => println!("{}: err {:?} {}", &src[..10.min(src.len())], e.errors[0].pos, e.errors[0].msg.chars().take(100).collect::<String>()), Ok(_) => println!("{}: ok", &src[..10.min(src.len())]) }
    }
    #[test]
    fn probe() {
        let n: usize = std::env::var("N").unwrap().parse().unwrap();
        let which = std::env::var("W").unwrap();
        let s = match which.as_str() {
            "not" => format!("{}true", "!".repeat(n)),
            "neg" => format!("{}1", "-".repeat(n)),
            "sel" => format!("a{}", ".b".repeat(n)),
            "list" => format!("{}1{}", "[".repeat(n), "]".repeat(n)),
            "paren" => format!("{}1{}", "(".repeat(n), ")".repeat(n)),
            "and" => format!("a{}", " && a".repeat(n)),
            "plus" => format!("1{}", "+1".repeat(n)),
            "idx" => format!("{}1{}", "a[".repeat(n), "]".repeat(n)),
            "call" => format!("{}1{}", "f(".repeat(n), ")".repeat(n)),
            "tern" => format!("{}1", "true ? 1 : ".repeat(n)),
            "eq" => format!("1{}", "==1".repeat(n)),
            _ => unreachable!(),
        };
        run(&s);
    }
}
