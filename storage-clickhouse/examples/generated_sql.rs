//! Prints every statement the ClickHouse store sends (schema, then queries with sample values bound), one per
//! line, for `.ci/chdb.sh` to run against modern ClickHouse. Usage: `generated_sql [DATABASE]`.

fn main() {
    let database = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fieldvitals".into());
    let cfg = storage_clickhouse::ClickHouseConfig {
        database,
        ..Default::default()
    };
    if let Err(e) = cfg.validate() {
        eprintln!("{e}");
        std::process::exit(2);
    }
    for s in storage_clickhouse::generated_sql(&cfg) {
        assert!(!s.contains('\n'), "one statement per line");
        println!("{s}");
    }
}
