use postbus_selector::*;
struct M;
impl SqlMapping for M {
    fn header_expr(&self, h: HeaderField) -> Option<String> {
        match h {
            HeaderField::JMSPriority => Some("m.priority".into()),
            HeaderField::JMSType => Some("m.jms_type".into()),
            HeaderField::JMSTimestamp => Some("m.ts".into()),
            _ => None,
        }
    }
    fn column_for_property(&self, n: &str) -> Option<(String, SqlType)> {
        match n {
            "JMSXGroupID" => Some(("m.group_id".into(), SqlType::Text)),
            "score" => Some(("m.score".into(), SqlType::Double)),
            _ => None,
        }
    }
    fn properties_column(&self) -> String {
        "m.properties".into()
    }
}
#[test]
fn show() {
    for s in [
        "currency IN ('EUR','USD') AND amount > 10000 AND region LIKE 'EU-%'",
        "NOT (a = 'x') OR b <> 'y' OR NOT (c <> 'z')",
        "amount = 5 OR amount < 20000000 OR NOT (amount > 3)",
        "flag AND NOT flag2",
        "x IS NULL OR y IS NOT NULL",
        "JMSPriority > 4 AND JMSType = 'trade' AND JMSXGroupID = 'g' AND JMSTimestamp > 1.5e15",
        "score > 2.5 OR NOT (score < 1)",
        "a BETWEEN 1 AND 10 AND NOT (b BETWEEN 2 AND 3) AND c NOT BETWEEN 4 AND 5",
        "a + 1 > 2 OR JMSExpiration > 5 OR 1 = 1",
        "-9223372036854775808 < a",
        "x LIKE 'a\\%b!_' ESCAPE '!'",
        "",
        "NOT NOT NOT a = 1",
        "-(5) = -5 AND - -5 = +5 AND -a = 1",
        "1.5F = f AND 1e300 = d AND 0.1 = x AND 7. = y",
    ] {
        let sel = Selector::parse(s).unwrap();
        println!("=== {s}\n{}", sel.explain());
        let f = sel.to_sql(&M, 3);
        println!("SQL: {}\nparams: {:?}\n", f.sql, f.params);
        assert_eq!(Selector::parse(&sel.to_string()).unwrap(), sel);
    }
    for s in [
        "amount > ",
        "a = 1 = 2",
        "((a = 1)",
        "a NOT = 1",
        "a IN (1)",
        "'x' < a",
        "a + 'x' = 1",
        "a AND 5",
        "5",
        "x LIKE 'a!b' ESCAPE '!'",
        "x LIKE 'it''s!b' ESCAPE '!'",
        "a = NULL",
        "a != 1",
        "a = \"x\"",
        "amount > 10 AND region LIKE",
        "9223372036854775808 = a",
        "a = 1 OR",
        "x ESCAPE 'a'",
        "(a = 1) = TRUE",
        "a BETWEEN 'a' AND 'b'",
    ] {
        println!("{s:30} => {}", Selector::parse(s).unwrap_err());
    }
}
